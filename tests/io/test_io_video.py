"""read_video / video_info: frame selection rules, every input kind, and one-line errors that name the file."""

from __future__ import annotations

import logging
import shutil

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from ccedit.errors import UserError
from ccedit.io import read_video, video_info
from tests.conftest import VIDEOS


@pytest.fixture(scope="module")
def car_turn_all():
    """All 80 frames of car-turn.mp4, decoded once for the comparisons below."""
    return read_video(VIDEOS / "car-turn.mp4")


def test_reads_every_frame_by_default():
    clip = read_video(VIDEOS / "kitten.mp4")
    assert clip.frames.shape == (16, 512, 512, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.fps == clip.source_fps == 8.0
    assert clip.indices == list(range(16))
    assert clip.source_size == (512, 512)
    assert clip.path.name == "kitten.mp4"


def test_target_fps_takes_every_gap_th_frame(car_turn_all):
    clip = read_video(VIDEOS / "car-turn.mp4", fps=5)
    # 10 fps -> 5 fps: gap 2.
    assert clip.indices == list(range(0, 80, 2))
    assert clip.fps == 5.0 and clip.source_fps == 10.0
    np.testing.assert_array_equal(clip.frames, car_turn_all.frames[::2])


@pytest.mark.parametrize(
    ("target_fps", "gap"),
    [
        (3, 3),  # round(3.33) = 3
        (4, 2),  # round(2.5) = 2: numpy rounds half to even, as the original CCEdit did
        (2.5, 4),
        (10, 1),
        (30, 1),  # faster than the source: every frame, never a gap of 0
    ],
)
def test_gap_follows_numpy_rounding(target_fps, gap):
    clip = read_video(VIDEOS / "car-turn.mp4", fps=target_fps, num_frames=5)
    assert clip.indices == [i * gap for i in range(5)]
    assert clip.fps == pytest.approx(10.0 / gap)


def test_mismatched_fps_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="ccedit.io.video"):
        clip = read_video(VIDEOS / "sailboat.mp4", fps=8)
    assert clip.fps == 4.0
    assert "sailboat.mp4" in caplog.text


def test_start_and_num_frames(car_turn_all):
    clip = read_video(VIDEOS / "car-turn.mp4", start=1.0, fps=5, num_frames=4)
    assert clip.indices == [10, 12, 14, 16]
    np.testing.assert_array_equal(clip.frames, car_turn_all.frames[[10, 12, 14, 16]])


def test_too_few_frames_says_what_to_pass():
    with pytest.raises(UserError) as info:
        read_video(VIDEOS / "kitten.mp4", num_frames=32)
    message = str(info.value)
    assert "kitten.mp4" in message and "16 frames" in message and "video.num_frames=16" in message
    assert "\n" not in message


def test_too_few_frames_counts_after_fps_and_start():
    # car-turn from 6 s at 5 fps: source frames 60, 62, ..., 78.
    with pytest.raises(UserError, match=r"car-turn\.mp4 has 10 frames at 5 fps from 6 s.*video.num_frames=10"):
        read_video(VIDEOS / "car-turn.mp4", fps=5, start=6.0, num_frames=11)


def test_start_past_the_end():
    with pytest.raises(UserError, match=r"kitten\.mp4 is 2\.00 s long.*past the end"):
        read_video(VIDEOS / "kitten.mp4", start=2.5)


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"fps": 0}, {"fps": -2.0}, {"start": -1.0}])
def test_invalid_selection_arguments(kwargs):
    with pytest.raises(UserError):
        read_video(VIDEOS / "kitten.mp4", **kwargs)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("kitten.mp4", (16, 8.0, (512, 512))),
        ("car-turn.mp4", (80, 10.0, (480, 480))),
        ("ballet-portrait.mp4", (40, 8.0, (512, 288))),
        ("sailboat.mp4", (24, 4.0, (288, 512))),
    ],
)
def test_video_info_matches_manifest(name, expected):
    assert video_info(VIDEOS / name) == expected


# ---- frame folders -------------------------------------------------------------------------------------------------


def _write_folder(folder, frames, names):
    folder.mkdir()
    for frame, name in zip(frames, names):
        Image.fromarray(frame).save(folder / name)


def test_frame_folder_natural_order_and_fps(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 24, 40, 3), dtype=np.uint8)
    # Unpadded numbers: a plain string sort would put 10.png before 2.png.
    _write_folder(tmp_path / "frames", frames, [f"{i + 1}.png" for i in range(12)])
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")

    clip = read_video(tmp_path / "frames")
    assert clip.fps == 8.0 and clip.source_size == (24, 40)
    np.testing.assert_array_equal(clip.frames, frames)  # png is lossless

    clip = read_video(tmp_path / "frames", fps=4, folder_fps=12, num_frames=3)
    assert clip.indices == [0, 3, 6] and clip.fps == 4.0
    np.testing.assert_array_equal(clip.frames, frames[[0, 3, 6]])
    assert video_info(tmp_path / "frames", folder_fps=12) == (12, 12.0, (24, 40))


def test_frame_folder_with_mixed_sizes(tmp_path):
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 20, 3), np.uint8)]
    _write_folder(tmp_path / "frames", frames, ["a.png", "b.png"])
    with pytest.raises(UserError, match=r"b\.png is 20x16"):
        read_video(tmp_path / "frames")


def test_empty_frame_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(UserError, match=r"frames has no frames"):
        read_video(tmp_path / "frames")


# ---- errors --------------------------------------------------------------------------------------------------------


def _assert_one_line_naming(error_info, name):
    message = str(error_info.value)
    assert name in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist") as info:
        read_video(tmp_path / "nowhere.mp4")
    _assert_one_line_naming(info, "nowhere.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(UserError, match="empty") as info:
        read_video(tmp_path / "empty.mp4")
    _assert_one_line_naming(info, "empty.mp4")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="could not be decoded") as info:
        read_video(path)
    _assert_one_line_naming(info, "noise.mp4")


@pytest.mark.parametrize("name", ["kitten.mp4", "car-turn.mp4"])
def test_truncated_copy(tmp_path, name):
    # kitten.mp4 keeps its index at the end, so a cut copy does not open; car-turn.mp4 keeps it at the start, so a
    # cut copy opens and fails while decoding.
    data = (VIDEOS / name).read_bytes()
    path = tmp_path / f"cut-{name}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="could not be decoded") as info:
        read_video(path)
    _assert_one_line_naming(info, path.name)


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (32, 32), fps=8, macro_block_size=1, ffmpeg_log_level="quiet")
    writer.send(None)
    writer.close()  # a valid container with no frames in it
    assert path.stat().st_size > 0
    with pytest.raises(UserError, match="no video frames") as info:
        read_video(path)
    _assert_one_line_naming(info, "zero.mp4")


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "clip.txt"
    shutil.copy(VIDEOS / "kitten.mp4", path)
    with pytest.raises(UserError, match=r"unsupported input type \.txt.*mp4.*gif") as info:
        read_video(path)
    _assert_one_line_naming(info, "clip.txt")


def test_video_info_raises_the_same_errors(tmp_path):
    with pytest.raises(UserError, match="nowhere.mp4"):
        video_info(tmp_path / "nowhere.mp4")


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mov", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4"), (".webm", "libvpx")]
)
def test_other_containers(tmp_path, suffix, codec):
    # decord mis-sizes some tiny widths (8 to 72 px), so not smaller than this.
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 64, 96, 3), dtype=np.uint8)
    path = tmp_path / f"clip{suffix}"
    writer = imageio_ffmpeg.write_frames(str(path), (96, 64), fps=6, codec=codec, ffmpeg_log_level="quiet")
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    clip = read_video(path, fps=3)
    assert clip.frames.shape == (3, 64, 96, 3) and clip.indices == [0, 2, 4]
    assert clip.fps == pytest.approx(3.0)


# Variable frame rate: frames are taken by their timestamps, so that motion keeps its speed, with a warning.

# 10 frames 0.1 s apart, then 10 frames 0.5 s apart.
VFR_STARTS = np.array([0.1 * i for i in range(10)] + [1.0 + 0.5 * i for i in range(10)])


def _assert_taken_by_time(clip, starts, caplog):
    assert "variable frame rate" in caplog.text and "video.fps" in caplog.text
    assert clip.num_frames == len(clip.indices) == clip.frames.shape[0]
    shown_at = np.asarray(starts)[clip.indices]
    wanted_at = np.arange(clip.num_frames) / clip.fps
    # The frame nearest each time of the constant-rate output: never further than half the longest gap.
    assert np.abs(shown_at - wanted_at).max() <= 0.25 + 1e-6
    assert np.all(np.diff(clip.indices) >= 0)
    assert len(set(clip.indices)) < clip.num_frames  # the slow stretch repeats frames
    assert set(range(10)) - set(clip.indices)  # the fast stretch is thinned


def test_variable_frame_rate_video_is_read_by_timestamps(tmp_path, caplog):
    import subprocess

    path = tmp_path / "vfr.mp4"
    pts = "if(lt(N,10),N*0.1,1+(N-10)*0.5)/TB"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi",
        "-i", "testsrc=size=64x48:rate=10:duration=2", "-vf", f"setpts='{pts}'", "-fps_mode", "passthrough",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"the bundled ffmpeg cannot write a variable-rate mp4: {result.stderr.strip()[-200:]}")
    with caplog.at_level(logging.WARNING):
        clip = read_video(path)
    _assert_taken_by_time(clip, VFR_STARTS, caplog)
    assert clip.source_fps == clip.fps == pytest.approx(20 / 5.6, rel=0.05)  # frames over the clip's duration
    assert video_info(path)[1] == pytest.approx(clip.fps)

    slower = read_video(path, fps=1)
    assert np.abs(VFR_STARTS[slower.indices] - np.arange(slower.num_frames) / slower.fps).max() <= 0.25 + 1e-6


def test_variable_frame_rate_gif_is_read_by_timestamps(tmp_path, caplog):
    path = tmp_path / "vfr.gif"
    colours = [Image.new("RGB", (16, 16), (12 * i, 255 - 12 * i, (40 * i) % 256)) for i in range(20)]
    durations = [100] * 10 + [500] * 10
    colours[0].save(path, save_all=True, append_images=colours[1:], duration=durations, loop=0)
    with caplog.at_level(logging.WARNING):
        clip = read_video(path)
    _assert_taken_by_time(clip, VFR_STARTS, caplog)


def test_constant_rate_clips_keep_their_frames(caplog):
    with caplog.at_level(logging.WARNING):
        clip = read_video(VIDEOS / "car-turn.mp4", num_frames=12)
    assert clip.indices == list(range(12)) and clip.fps == 10.0
    assert "variable frame rate" not in caplog.text


def test_sixteen_bit_frame_folder_is_scaled_not_clipped(tmp_path):
    import cv2

    ramp = np.linspace(0, 65535, 32 * 48).reshape(32, 48).round().astype(np.uint16)
    for i in range(3):
        assert cv2.imwrite(str(tmp_path / f"{i}.png"), ramp // (i + 1))
    clip = read_video(tmp_path)
    for i in range(3):
        expected = np.round((ramp // (i + 1)) / 257.0).astype(np.uint8)
        np.testing.assert_array_equal(clip.frames[i], np.repeat(expected[..., None], 3, axis=-1))


@pytest.mark.parametrize(
    "error", [MemoryError("Unable to allocate 8.4 GiB"), RuntimeError("[12:00:00] src/video_reader.cc:1: std::bad_alloc")]
)
def test_out_of_memory_while_decoding_is_reported_as_such(monkeypatch, error):
    import decord

    def runs_out_of_memory(self, indices):
        raise error

    monkeypatch.setattr(decord.VideoReader, "get_batch", runs_out_of_memory)
    path = VIDEOS / "kitten.mp4"
    with pytest.raises(UserError, match="out of memory decoding 4 frames of") as info:
        read_video(path, num_frames=4)
    _assert_one_line_naming(info, "kitten.mp4")
    assert "corrupt" not in str(info.value) and "video.num_frames" in str(info.value)


@pytest.mark.parametrize("side", [1, 2])
def test_tiny_frame_videos_are_read_not_called_corrupt(tmp_path, side):
    import subprocess

    import imageio_ffmpeg

    path = tmp_path / f"tiny{side}.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=c=red:s={side}x{side}:d=0.5:r=8", "-c:v", "libx264rgb", str(path)], check=True)
    clip = read_video(path)
    assert clip.frames.shape == (4, side, side, 3)
    assert (clip.frames[..., 0] > 200).all() and (clip.frames[..., 1:] < 60).all()  # red
