"""Writers: mp4/GIF/frame-folder round trips, browser-friendly mp4, atomic failure, side_by_side layout."""

from __future__ import annotations

import logging
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

import ccedit.io.writers as writers
from ccedit.errors import UserError
from ccedit.io import read_video, side_by_side, write_frames, write_gif, write_video
from tests.conftest import VIDEOS


@pytest.fixture(scope="module")
def kitten():
    return read_video(VIDEOS / "kitten.mp4")


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_mp4_round_trip(tmp_path, kitten):
    path = write_video(tmp_path / "out" / "kitten.mp4", kitten.frames, kitten.fps)
    back = read_video(path)
    assert back.frames.shape == kitten.frames.shape
    assert back.fps == pytest.approx(kitten.fps)
    assert _mean_abs_diff(back.frames, kitten.frames) < 3.0  # lossy, but close at crf 18
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["kitten.mp4"]  # no temporary left over


def test_mp4_plays_in_browsers(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 64, 96, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames, 8)
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr
    assert "h264" in probe and "yuv420p" in probe
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index first (+faststart), so playback starts before download ends


def test_fractional_fps_and_odd_size(tmp_path, caplog):
    frames = np.full((5, 33, 35, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING, logger="ccedit.io.writers"):
        path = write_video(tmp_path / "odd.mp4", frames, 10 / 3)
    assert "odd.mp4" in caplog.text
    back = read_video(path)
    assert back.frames.shape == (5, 34, 36, 3)  # padded to even sides
    assert back.fps == pytest.approx(10 / 3, rel=1e-3)


def test_gif_round_trip_keeps_repeated_frames(tmp_path, kitten):
    frames = kitten.frames[:, ::4, ::4].copy()  # 128x128 keeps it quick
    frames[5] = frames[6] = frames[4]  # a still moment must not collapse into one frame
    path = write_gif(tmp_path / "kitten.gif", frames, kitten.fps)
    back = read_video(path)
    assert back.frames.shape == frames.shape
    # GIF delays are centiseconds (120/130 ms alternate for 8 fps).
    assert back.fps == pytest.approx(8.0, rel=0.02)
    assert _mean_abs_diff(back.frames, frames) < 10.0  # 256-colour palette
    # write_video dispatches on the extension.
    assert read_video(write_video(tmp_path / "again.gif", frames, 8)).num_frames == 16


def test_frame_folder_round_trip(tmp_path, kitten):
    frames = kitten.frames[:3, :32, :48]
    folder = write_frames(tmp_path / "frames", frames)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(read_video(folder).frames, frames)
    # Writing again replaces the folder as a whole.
    write_frames(folder, frames[:1])
    assert [p.name for p in folder.iterdir()] == ["00000.png"]


def _fake_ffmpeg(tmp_path, monkeypatch, script: str):
    """Put a shell script in place of the bundled ffmpeg; the output path is its last argument."""
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nfor last; do :; done\n" + script)
    exe.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(exe))


@pytest.mark.parametrize(
    "script,message",
    [
        # a full disk: part of the file written, then an error and a non-zero exit status
        ('cat > /dev/null; head -c 3000 /dev/urandom > "$last"; echo "No space left on device" >&2; exit 1\n',
         "No space left on device"),
        # an encoder that claims success but leaves an undecodable file
        ('cat > /dev/null; head -c 3000 /dev/urandom > "$last"; exit 0\n', "cannot be read back"),
    ],
    ids=["exit-status", "unreadable-file"],
)
def test_failed_video_write_raises_and_leaves_nothing(tmp_path, kitten, monkeypatch, script, message):
    existing = write_video(tmp_path / "out.mp4", kitten.frames[:2], 8)
    before = existing.read_bytes()
    _fake_ffmpeg(tmp_path, monkeypatch, script)
    for name in ("new.mp4", "out.mp4", "new.gif"):
        with pytest.raises(writers.EncoderError, match=message):
            write_video(tmp_path / name, kitten.frames[:4], 8)
    # Nothing new, no temporary, and the earlier output untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "out.mp4"]
    assert existing.read_bytes() == before


def test_a_video_with_too_few_frames_is_not_published(tmp_path, kitten, monkeypatch):
    short = write_video(tmp_path / "short.mp4", kitten.frames[:2], 8)
    _fake_ffmpeg(tmp_path, monkeypatch, f'cat > /dev/null; cp {short} "$last"\n')
    with pytest.raises(writers.EncoderError, match="2 frames instead of 4"):
        write_video(tmp_path / "new.mp4", kitten.frames[:4], 8)
    assert not (tmp_path / "new.mp4").exists()


def test_failed_frame_folder_write_leaves_nothing(tmp_path, kitten, monkeypatch):
    real_save = writers._save
    calls = []

    def save_then_fail(image, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        real_save(image, path)

    monkeypatch.setattr(writers, "_save", save_then_fail)
    with pytest.raises(OSError):
        write_frames(tmp_path / "frames", kitten.frames[:5, :16, :16])
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_bad_output_names_and_arrays(tmp_path, kitten):
    with pytest.raises(UserError, match=r"clip\.avi"):
        write_video(tmp_path / "clip.avi", kitten.frames, 8)
    with pytest.raises(UserError, match=r"clip\.mp4"):
        write_gif(tmp_path / "clip.mp4", kitten.frames, 8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "clip.mp4", kitten.frames.astype(np.float32), 8)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "clip.mp4", kitten.frames, 0)
    assert list(tmp_path.iterdir()) == []


def test_side_by_side_layout():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(3, 32, 48, 3), dtype=np.uint8)
    out = side_by_side(source, small, source)
    assert out.shape == (3, 64, 64 + 96 + 64, 3)
    np.testing.assert_array_equal(out[:, :, :64], source)
    np.testing.assert_array_equal(out[:, :, -64:], source)

    with pytest.raises(ValueError, match="same number of frames"):
        side_by_side(source, source[:2])
    with pytest.raises(ValueError, match="one entry per video"):
        side_by_side(source, source, labels=["source"])


def test_side_by_side_labels_draw_only_in_the_corner():
    frames = np.full((2, 128, 128, 3), 100, np.uint8)
    out = side_by_side(frames, frames, labels=["source", ""])
    left, right = out[:, :, :128], out[:, :, 128:]
    assert (left[:, :40, :100] != 100).any()  # the caption
    assert (left[:, 64:] == 100).all()  # nothing below it
    np.testing.assert_array_equal(right, frames)  # an empty label draws nothing
    assert (frames == 100).all()  # inputs untouched
