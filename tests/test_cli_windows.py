"""`ccedit edit` on whole clips: every frame edited, keyframes anywhere, automatic keyframes, any frame size."""

import json
import shlex

import numpy as np
import pytest
from PIL import Image

from ccedit.cli import main
from ccedit.io import read_image, read_video, video_info, working_size, write_video
from tests.conftest import VIDEOS
from tests.test_cli import cache, one_error_line

TINY = ["--model", "tiny", "--steps", "1"]


def moving_square_clip(path, frames=40, size=(96, 160), fps=24.0):
    """A synthetic clip: a square crossing a gradient, so that every frame differs."""
    h, w = size
    video = np.zeros((frames, h, w, 3), dtype=np.uint8)
    video[..., 2] = np.linspace(0, 255, w, dtype=np.uint8)
    for t in range(frames):
        x = int(t * (w - 24) / max(1, frames - 1))
        video[t, h // 3 : h // 3 + 24, x : x + 24] = (255, 200, 0)
    write_video(path, video, fps)
    return path


def test_without_frames_the_whole_clip_is_edited_at_its_fps(tmp_path):
    clip = moving_square_clip(tmp_path / "in.mp4", frames=40)
    out = tmp_path / "out.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), *TINY, cache(tmp_path), "--window", "16",
                 "--height", "64"]) == 0  # the frame count, rate and windows do not depend on the size
    n, fps, (h, w) = video_info(out)
    assert n == 40 and abs(fps - 24) < 1e-3
    side = json.loads((tmp_path / "out.mp4.json").read_text())
    assert side["video"]["frame_indices"] == list(range(40))
    assert side["windows"]["per_pass"] == [3]  # 16-frame windows sharing at least 4: 0-15, 12-27, 24-39


def test_the_keyframe_hint_reproduces_the_same_frame(tmp_path, capsys):
    clip = str(VIDEOS / "kitten.mp4")
    frame = tmp_path / "k.png"
    selection = ["--model", "tiny", "--frames", "12", "--fps", "15", "--height", "64", "--width", "96"]
    assert main(["keyframe", clip, "--index", "7", "-o", str(frame), *selection]) == 0
    printed = capsys.readouterr().out
    command = shlex.split(printed.split("then: ", 1)[1])
    assert command[:2] == ["ccedit", "edit"] and f"{frame}@7" in command
    # run exactly the printed command (with a prompt and an output); the keyframe is the frame the edit uses at 7
    args = [a for a in command[2:] if a not in ("--prompt", "...")]
    out = tmp_path / "o.mp4"
    assert main(["edit", *args, "--prompt", "x", "-o", str(out), "--steps", "1", cache(tmp_path), "output.frames=true"]) == 0
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["keyframes"][0]["index"] == 7 and side["video"]["num_frames"] == 12
    assert side["video"]["working_size"] == [64, 96]
    # the keyframe is kept at its frame: the output shows it there up to the tiny VAE's round trip
    assert side["keyframes"][0]["output_psnr_db"] > vae_round_trip_psnr(read_image(frame)) - 0.5
    # ... and it shows the source frame at its index: the structure match finds that frame
    assert side["keyframes"][0]["match"]["best_frame"] == 7
    edited = read_image(sorted((tmp_path / "o_frames").iterdir())[7])
    assert edited.shape == (64, 96, 3)


def vae_round_trip_psnr(image: np.ndarray) -> float:
    """The PSNR a perfectly kept keyframe can reach: through the tiny model's VAE and back."""
    import torch

    from ccedit.edit_record import psnr
    from ccedit.pipelines.tiny import tiny_components

    vae = tiny_components(keyframe=False)["vae"]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    back = ((y[0].permute(1, 2, 0) + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8).numpy()
    return psnr(back, image)


def test_keyframes_at_both_ends_are_kept_and_their_psnr_reported(tmp_path):
    clip = moving_square_clip(tmp_path / "in.mp4", frames=30)
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    size = ["--height", "64"]  # the PSNR is judged against the VAE's round trip at the same size
    assert main(["keyframe", str(clip), "--index", "0", "-o", str(first), "--model", "tiny", *size]) == 0
    assert main(["keyframe", str(clip), "--index", "-1", "-o", str(last), "--model", "tiny", *size]) == 0
    Image.fromarray(255 - read_image(first)).save(first)
    args = ["edit", str(clip), "--prompt", "x", *TINY, *size, cache(tmp_path), "--window", "8",
            "--keyframe", f"{first}@0", "--keyframe", f"{last}@-1"]
    assert main([*args, "-o", str(tmp_path / "o.mp4")]) == 0
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert [k["index"] for k in side["keyframes"]] == [0, 29]
    assert len(side["windows"]["per_pass"]) == 2  # hierarchical: a sparse pass, then the dense windows
    assert video_info(tmp_path / "o.mp4")[0] == 30
    for kept, image in zip(side["keyframes"], (first, last)):
        # as close as the VAE allows (the latents themselves are kept exactly: tests/pipelines/test_keyframes.py)
        assert kept["output_psnr_db"] > vae_round_trip_psnr(read_image(image)) - 0.5


def test_automatic_keyframe_is_edited_saved_and_propagated(tmp_path):
    clip = str(VIDEOS / "kitten.mp4")
    out = tmp_path / "o.mp4"
    size = ["--height", "64"]
    assert main(["edit", clip, "--prompt", "a dog", "-o", str(out), *TINY, *size, cache(tmp_path), "--frames", "6",
                 "--keyframe", "auto@2"]) == 0
    saved = tmp_path / "o.keyframe2.png"
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    kept = side["keyframes"][0]
    assert kept == {"path": str(saved), "auto": True, "index": 2, "match": kept["match"],
                    "output_psnr_db": kept["output_psnr_db"]}
    image = read_image(saved)
    source = read_video(clip, num_frames=6).frames
    assert image.shape == (64, 64, 3)
    # an edit, not a copy of the source frame
    from ccedit.io import fit_frames

    assert np.abs(image.astype(int) - fit_frames(source, (64, 64))[0][2].astype(int)).mean() > 5
    # the saved keyframe, given back, reproduces the same edit
    again = tmp_path / "again.mp4"
    assert main(["edit", clip, "--prompt", "a dog", "-o", str(again), *TINY, *size, cache(tmp_path), "--frames", "6",
                 "--keyframe", f"{saved}@2"]) == 0
    assert np.array_equal(read_video(out).frames, read_video(again).frames)


@pytest.mark.parametrize("source,working", [((480, 854), (128, 224)), ((960, 540), (224, 128)), ((656, 656), (128, 128))])
def test_odd_sizes_keep_their_aspect_within_two_percent(tmp_path, source, working):
    assert working_size(source, short_side=128, multiple=8) == working
    aspect = source[1] / source[0]
    assert abs(working[1] / working[0] - aspect) / aspect < 0.02
    clip = moving_square_clip(tmp_path / "in.mp4", frames=3, size=source)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), *TINY, cache(tmp_path)]) == 0
    assert video_info(out)[2] == working


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--keyframe", "{key}@40"], "keyframe index 40 is out of range"),
        (["--keyframe", "{key}@3", "--keyframe", "{key}@-7"], "two keyframes show frame 3"),
        (["--window", "8", "--overlap", "8"], "overlap (8) must be smaller than the window (8)"),
        (["--keyframe", "{tmp}/missing.png"], "missing.png does not exist"),
        (["--keyframe", "{key}", "--keyframe", "{key}"], "several keyframes need their frames"),
    ],
)
def test_bad_windows_and_keyframes_are_one_line_and_write_nothing(tmp_path, capsys, extra, expected):
    clip = moving_square_clip(tmp_path / "in.mp4", frames=10, size=(64, 64))
    key = tmp_path / "key.png"
    Image.new("RGB", (64, 64)).save(key)
    out = tmp_path / "o.mp4"
    extra = [e.format(key=key, tmp=tmp_path) for e in extra]
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), *TINY, cache(tmp_path), *extra]) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "o.mp4.json").exists()


def test_a_window_longer_than_the_clip_is_one_window(tmp_path):
    clip = moving_square_clip(tmp_path / "in.mp4", frames=6, size=(64, 64))
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), *TINY, cache(tmp_path), "--window", "64"]) == 0
    assert json.loads((tmp_path / "o.mp4.json").read_text())["windows"]["per_pass"] == [1]
