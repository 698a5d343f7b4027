"""Finding the frame an edited keyframe shows, by structure: `ccedit keyframe --match IMAGE`, `ccedit edit --keyframe
IMAGE@match`, and the sidecar's check of each keyframe against the source frame at its index."""

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from ccedit.cli import main
from ccedit.io import read_image, read_video, write_frames
from ccedit.keyframe_match import WEAK_SCORE
from tests.conftest import KEYFRAME, VIDEOS

# The sailboat clip: the camera tracks the boat, so every frame's layout differs from the others'.
CLIP = ["--model", "tiny", "--frames", "12"]
EDIT = [*CLIP, "--steps", "1", "--prompt", "a pirate ship"]
SHOWN = 7  # the frame the edited keyframes are made from


def cache(tmp_path):
    return f"structure.cache_dir={tmp_path / 'cache'}"


@pytest.fixture(scope="module")
def sailboat():
    return str(VIDEOS / "sailboat.mp4")


def colour_edits(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Edits that keep the frame's structure and change every colour."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 90) % 180  # opposite hues
    stylised = cv2.stylization(frame[..., ::-1].copy(), sigma_s=60, sigma_r=0.45)[..., ::-1]  # a painterly look
    return {"inverted": 255 - frame, "hue": cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB),
            "stylised": np.ascontiguousarray(stylised)}


@pytest.fixture(scope="module")
def edited_keyframes(tmp_path_factory, sailboat):
    """Colour edits of frame SHOWN as `ccedit keyframe` writes it (made once: the tests only read them)."""
    tmp_path = tmp_path_factory.mktemp("edited_keyframes")
    frame_path = tmp_path / "frame.png"
    assert main(["keyframe", sailboat, "--index", str(SHOWN), "-o", str(frame_path), *CLIP]) == 0
    paths = {}
    for name, image in colour_edits(read_image(frame_path)).items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(image).save(paths[name])
    return paths


def report_line(capsys) -> str:
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(out) == 1, out
    return out[0]


@pytest.mark.parametrize("edit", ["inverted", "hue", "stylised"])
def test_keyframe_match_finds_the_frame_an_edited_image_shows(tmp_path, sailboat, edited_keyframes, edit, capsys):
    image = edited_keyframes[edit]
    assert main(["keyframe", sailboat, "--match", str(image), *CLIP]) == 0
    line = report_line(capsys)
    assert f"{image} shows frame {SHOWN} of 12: structure match" in line
    best = float(re.search(r"structure match ([-\d.]+)", line)[1])
    assert best >= WEAK_SCORE
    # How sure: the margin to the best frame of another part of the clip (never a neighbour, which looks alike), or
    # that no other part comes close.
    found = re.search(r"\(runner-up frame (\d+) at ([-\d.]+), margin ([-\d.]+)\)", line)
    if found:
        runner_up, margin = float(found[2]), float(found[3])
        assert margin == pytest.approx(best - runner_up, abs=0.011) and margin > 0.05
        assert abs(int(found[1]) - SHOWN) > 1
    else:
        assert "(no other part of the clip comes close)" in line
    # The command to run next places the image at the frame found, with the same frame selection.
    assert f"ccedit edit {sailboat} --keyframe {image}@{SHOWN} --model tiny --frames 12" in line
    assert not list(tmp_path.glob("sailboat*"))  # --match writes nothing


def test_edit_places_an_image_at_match_and_the_sidecar_reports_the_match(tmp_path, sailboat, edited_keyframes, caplog):
    image, out = edited_keyframes["inverted"], tmp_path / "out.mp4"
    with caplog.at_level("WARNING"):
        assert main(["edit", sailboat, "--keyframe", f"{image}@match", "-o", str(out), *EDIT, cache(tmp_path)]) == 0
    assert f"{image} shows frame {SHOWN} of 12" in caplog.text
    [keyframe] = json.loads((tmp_path / "out.mp4.json").read_text())["keyframes"]
    assert keyframe["index"] == SHOWN
    assert keyframe["match"]["best_frame"] == SHOWN and keyframe["match"]["score"] == keyframe["match"]["best_score"]
    assert keyframe["match"]["score"] > 0.9  # the inverted frame has the frame's own structure
    assert "output_psnr_db" in keyframe and "psnr_db" not in keyframe


def test_the_sidecar_match_tells_a_misplaced_keyframe_from_a_placed_one(tmp_path, sailboat, edited_keyframes, caplog):
    # The output's PSNR against the keyframe cannot tell: the edit shows the keyframe wherever it is placed.
    image = edited_keyframes["inverted"]
    sidecars = {}
    for index in (SHOWN, 1):
        out = tmp_path / f"at{index}.mp4"
        with caplog.at_level("WARNING"):
            assert main(["edit", sailboat, "--keyframe", f"{image}@{index}", "-o", str(out), *EDIT,
                         cache(tmp_path)]) == 0
        sidecars[index] = json.loads((tmp_path / f"at{index}.mp4.json").read_text())["keyframes"][0]
    placed, misplaced = sidecars[SHOWN]["match"], sidecars[1]["match"]
    assert placed["best_frame"] == misplaced["best_frame"] == SHOWN
    assert placed["score"] > 0.9 and misplaced["score"] < placed["score"] - 0.5
    assert misplaced["best_score"] == pytest.approx(placed["best_score"])
    # ... and the edit said so while it ran, naming the frame the image shows.
    warned = [r.getMessage() for r in caplog.records if "looks like frame" in r.getMessage()]
    assert warned == [f"keyframe {image}@1 looks like frame {SHOWN} (structure match {placed['best_score']:.2f} "
                      f"there, {misplaced['score']:.2f} at frame 1): check the frame, or write {image}@match"]


@pytest.fixture
def there_and_back(tmp_path, sailboat):
    """A clip that plays six frames forward then backward: frame k and frame 11 - k are the same picture."""
    frames = read_video(sailboat, num_frames=6).frames
    folder = write_frames(tmp_path / "there_and_back", np.concatenate([frames, frames[::-1]]))
    image = tmp_path / "inverted2.png"
    Image.fromarray(255 - frames[2]).save(image)
    return str(folder), image


def test_an_ambiguous_match_is_reported_as_such(there_and_back, capsys):
    clip, image = there_and_back
    assert main(["keyframe", clip, "--match", str(image), "--model", "tiny"]) == 0
    line = report_line(capsys)
    assert re.search(rf"{image} matches frames (2 and 9|9 and 2) of 12 about equally \(structure match", line), line
    assert "margin 0.00 < 0.05" in line and "ccedit edit" not in line  # no frame is proposed


def test_edit_refuses_an_ambiguous_match_in_one_line_before_any_model(tmp_path, there_and_back, capsys, monkeypatch):
    clip, image = there_and_back
    from ccedit import editing

    monkeypatch.setattr(editing.EditSession, "pipe", property(lambda self: pytest.fail("the model was loaded")))
    out = tmp_path / "out.mp4"
    assert main(["edit", clip, "--keyframe", f"{image}@match", "-o", str(out), "--model", "tiny",
                 "--prompt", "x"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--keyframe {image}@match: {image} matches frames" in errors[0]
    assert f"write {image}@K" in errors[0] and not out.exists()


def test_an_unrelated_image_matches_no_frame(tmp_path, sailboat, capsys):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 224, 3), dtype=np.uint8)).save(noise)
    assert main(["keyframe", sailboat, "--match", str(noise), *CLIP]) == 0
    assert f"{noise} matches none of the 12 frames clearly" in report_line(capsys)
    assert main(["edit", sailboat, "--keyframe", f"{noise}@match", "-o", str(tmp_path / "o.mp4"), *EDIT]) == 2
    assert "matches none of the 12 frames" in capsys.readouterr().err


def test_the_kitten_keyframe_shows_the_start_of_the_kitten_clip(capsys):
    # Frames 0 to 3 (the kitten still) match about equally: neighbours that look alike are no ambiguity.
    assert main(["keyframe", str(VIDEOS / "kitten.mp4"), "--match", str(KEYFRAME), "--model", "tiny"]) == 0
    found = re.search(r"shows frame (\d+) of 16: structure match", report_line(capsys))
    assert found and int(found[1]) in range(4)


@pytest.mark.parametrize("argv,expected", [
    (["--keyframe", "auto@match"], "`auto` edits a frame you choose"),
    (["--keyframe", "{image}@match", "--keyframe-index", "3"], "drop --keyframe-index"),
])
def test_match_specs_that_make_no_sense_are_one_line(tmp_path, sailboat, edited_keyframes, capsys, argv, expected):
    argv = [a.format(image=edited_keyframes["inverted"]) for a in argv]
    assert main(["edit", sailboat, *argv, "-o", str(tmp_path / "o.mp4"), *EDIT]) == 2
    assert expected in capsys.readouterr().err


def test_keyframe_match_takes_neither_an_index_nor_an_output(tmp_path, sailboat, edited_keyframes, capsys):
    assert main(["keyframe", sailboat, "--match", str(edited_keyframes["hue"]), "--index", "2", *CLIP]) == 2
    assert "--match finds the frame and writes nothing" in capsys.readouterr().err
