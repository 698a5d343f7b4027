"""`ccedit` command line end to end on the tiny model: outputs, sidecar, keyframes and one-line user errors."""

import json

import numpy as np
import pytest
from PIL import Image

from ccedit.cli import main
from ccedit.io import read_image, video_info
from tests.conftest import VIDEOS

# Small and fast: 4 frames, 1 DPM++(2S)-a step, structure maps cached under tmp_path.
FAST = ["--model", "tiny", "--frames", "4", "--steps", "1"]


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


def cache(tmp_path):
    return f"structure.cache_dir={tmp_path / 'cache'}"


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_edit_writes_mp4_and_sidecar(tmp_path, kitten, capsys):
    out = tmp_path / "out.mp4"
    assert main(["edit", kitten, "--prompt", "a watercolor painting", "-o", str(out), *FAST, cache(tmp_path), "sampling.seed=3"]) == 0
    n, fps, (h, w) = video_info(out)
    assert (n, h, w) == (4, 128, 128) and abs(fps - 8) < 1e-6
    side = json.loads((tmp_path / "out.mp4.json").read_text())
    assert side["seed"] == 3 and side["config"]["sampling"]["seed"] == 3
    assert side["video"]["frame_indices"] == [0, 1, 2, 3]
    assert side["config"]["structure"]["annotators"] == ["canny"]
    assert {"torch", "diffusers", "ccedit"} <= set(side["versions"])
    assert side["timings_seconds"]["denoise"] > 0
    assert side["peak_memory_bytes"] > 50 * 2**20  # max RSS on the CPU: torch alone holds more than 50 MiB
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary or staging folder left


def test_keyframe_command_then_keyframe_guided_edit(tmp_path, kitten):
    frame = tmp_path / "frame.png"
    assert main(["keyframe", kitten, "--index", "1", "-o", str(frame), *FAST[:4]]) == 0
    image = read_image(frame)
    assert image.shape == (128, 128, 3)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert main(["edit", kitten, "--prompt", "a dog", "-o", str(a), *FAST, cache(tmp_path), "--keyframe", str(frame), "--keyframe-index", "1"]) == 0
    side = json.loads((tmp_path / "a.mp4.json").read_text())
    assert [k["index"] for k in side["keyframes"]] == [1] and side["prior"] == "keyframe"
    # an edited keyframe changes the result
    Image.fromarray(255 - image).save(frame)
    assert main(["edit", kitten, "--prompt", "a dog", "-o", str(b), *FAST, cache(tmp_path), "--keyframe", str(frame), "--keyframe-index", "1"]) == 0
    from ccedit.io import read_video

    assert not np.array_equal(read_video(a).frames, read_video(b).frames)


@pytest.mark.parametrize("clip,portrait", [("ballet-portrait.mp4", True), ("sailboat.mp4", False)])
def test_working_size_keeps_the_aspect_ratio(tmp_path, clip, portrait):
    frame = tmp_path / "k.png"
    assert main(["keyframe", str(VIDEOS / clip), "-o", str(frame), "--model", "tiny", "--frames", "2"]) == 0
    h, w, _ = read_image(frame).shape
    assert (h > w) == portrait and h % 8 == 0 and w % 8 == 0 and min(h, w) == 128


def test_existing_output_needs_overwrite(tmp_path, kitten, capsys):
    frame = tmp_path / "frame.png"
    frame.write_bytes(b"keep me")
    assert main(["keyframe", kitten, "-o", str(frame), "--frames", "2"]) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert frame.read_bytes() == b"keep me"
    assert main(["keyframe", kitten, "-o", str(frame), "--frames", "2", "--overwrite"]) == 0
    assert read_image(frame).shape == (128, 128, 3)


def _corrupt(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.RandomState(0).bytes(5000))
    return bad


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "does not exist"),
        ("empty", "empty"),
        ("corrupt", "bad.mp4"),
        ("too_few", "has 16 frames"),
        ("keyframe_unreadable", "nokey.png"),
        ("keyframe_index", "out of range"),
        ("model_missing", "ccedit convert"),
        ("hub_unreachable", "neither a folder here nor a hub model available here"),
        ("bad_setting", "sampling.nonsense"),
        ("unknown_structure", "unknown annotator"),
    ],
)
def test_user_errors_are_one_line_with_exit_2_and_no_output(tmp_path, kitten, capsys, case, expected):
    out = tmp_path / "out.mp4"
    src = kitten
    extra = []
    if case == "missing":
        src = str(tmp_path / "nope.mp4")
    elif case == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        src = str(tmp_path / "empty.mp4")
    elif case == "corrupt":
        src = str(_corrupt(tmp_path))
    elif case == "too_few":
        extra = ["--frames", "40"]
    elif case == "keyframe_unreadable":
        (tmp_path / "nokey.png").write_bytes(b"not an image")
        extra = ["--keyframe", str(tmp_path / "nokey.png")]
    elif case == "keyframe_index":
        frame = tmp_path / "k.png"
        Image.new("RGB", (128, 128)).save(frame)
        extra = ["--keyframe", str(frame), "--keyframe-index", "9"]
    elif case == "model_missing":
        extra = ["--model", str(tmp_path / "no_model")]
    elif case == "hub_unreachable":
        extra = ["--model", "nobody/no-such-ccedit-model"]
    elif case == "bad_setting":
        extra = ["sampling.nonsense=1"]
    elif case == "unknown_structure":
        extra = ["--structure", "sketchy"]
    args = ["edit", src, "--prompt", "x", "-o", str(out), *FAST, cache(tmp_path)]
    if case == "too_few":
        args[args.index("--frames") + 1] = "40"
    elif case in ("model_missing", "hub_unreachable"):
        args[args.index("--model") + 1] = extra[1]
        extra = []
    assert main(args + extra) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "out.mp4.json").exists()


def test_keyframe_of_another_size_is_resized_with_a_warning(tmp_path, kitten, caplog):
    frame = tmp_path / "big.png"
    Image.new("RGB", (300, 300), (200, 30, 30)).save(frame)
    with caplog.at_level("WARNING"):
        assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, cache(tmp_path), "--keyframe", str(frame)]) == 0
    assert "resizing it" in caplog.text


def test_usage_errors_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["edit", "--prompt"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["edit", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--prompt", "--keyframe", "--keyframe-index", "--structure", "--model", "--config", "--frames",
                 "--fps", "--height", "--width", "--steps", "--seed", "--side-by-side", "--overwrite", "KEY=VALUE"):
        assert flag in help_text


def test_env_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch:" in out and "diffusers:" in out and "ccedit:" in out


def test_side_by_side_and_gif_outputs_and_edit_overwrite(tmp_path, kitten, capsys):
    out = tmp_path / "o.mp4"
    args = ["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, "--height", "64", cache(tmp_path), "--side-by-side",
            "output.gif=true"]
    assert main(args) == 0
    n, _, (h, w) = video_info(tmp_path / "o.side_by_side.mp4")
    assert (n, h, w) == (4, 64, 3 * 64)  # source | structure map | result
    assert video_info(tmp_path / "o.gif")[0] == 4
    before = out.read_bytes()
    assert main(args) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert out.read_bytes() == before
    assert main([*args, "--overwrite", "--seed", "5"]) == 0
    assert json.loads((tmp_path / "o.mp4.json").read_text())["seed"] == 5


def test_requested_fps_and_size_reach_the_output(tmp_path, kitten):
    out = tmp_path / "o.mp4"
    assert main(["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, cache(tmp_path), "--fps", "4", "--height", "64", "--width", "128"]) == 0
    n, fps, (h, w) = video_info(out)
    assert (n, h, w) == (4, 64, 128) and abs(fps - 4) < 1e-6
    assert json.loads((tmp_path / "o.mp4.json").read_text())["video"]["frame_indices"] == [0, 2, 4, 6]


@pytest.mark.parametrize("kind", ["folder", "gif"])
def test_frame_folders_and_gifs_are_inputs_too(tmp_path, kitten, kind):
    from ccedit.io import read_video, write_frames, write_gif

    frames = read_video(kitten, num_frames=6).frames
    src = write_frames(tmp_path / "frames", frames) if kind == "folder" else write_gif(tmp_path / "clip.gif", frames, 8)
    frame = tmp_path / "k.png"
    assert main(["keyframe", str(src), "--index", "-1", "-o", str(frame), "--model", "tiny"]) == 0
    last = read_image(frame).astype(int)
    assert last.shape == (128, 128, 3)
    # index -1 is the last of the 6 frames, fitted like an edit fits it
    from ccedit.io import fit_frames

    fitted, _ = fit_frames(read_video(src).frames, (128, 128))
    assert np.abs(fitted[-1].astype(int) - last).mean() < 3


def test_two_structure_annotators_with_two_controlnets_and_scales(tmp_path, kitten, capsys):
    out = tmp_path / "o.mp4"
    base = ["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, cache(tmp_path), "--structure", "canny,canny"]
    assert main(base) == 2
    assert "structure.controlnets" in one_error_line(capsys)
    assert main([*base, "structure.controlnets=[null,extra]", "--structure-scale", "1,0.5"]) == 0
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["config"]["structure"]["scales"] == [1.0, 0.5]
    assert video_info(out)[0] == 4


def test_a_second_prompt_on_the_same_video_reuses_the_cached_structure_maps(tmp_path, kitten, monkeypatch):
    from ccedit.annotators import CannyEdges

    args = ["edit", kitten, *FAST, "--height", "64", cache(tmp_path)]
    assert main([*args, "--prompt", "a cat", "-o", str(tmp_path / "a.mp4")]) == 0
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(entries) == 1

    def must_not_run(self, frames):
        raise AssertionError("the structure maps should have come from the cache")

    monkeypatch.setattr(CannyEdges, "__call__", must_not_run)
    assert main([*args, "--prompt", "a dog", "-o", str(tmp_path / "b.mp4")]) == 0


def test_a_keyframe_at_appearance_scale_0_edits_exactly_like_no_keyframe(tmp_path, kitten):
    # one rule through the CLI as through the pipeline: no appearance branch, no pinning and no anchor prior from it
    frame = tmp_path / "k.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(frame)
    args = ["edit", kitten, "--prompt", "a dog", *FAST, "--height", "64", cache(tmp_path), "output.frames=true",
            "sampling.appearance_scale=0"]
    assert main([*args, "-o", str(tmp_path / "muted.mp4"), "--keyframe", str(frame), "--keyframe-index", "1"]) == 0
    assert main([*args, "-o", str(tmp_path / "none.mp4")]) == 0
    muted, none = (sorted((tmp_path / name).iterdir()) for name in ("muted_frames", "none_frames"))
    assert len(muted) == len(none) == 4
    for a, b in zip(muted, none):
        assert np.array_equal(read_image(a), read_image(b)), a.name
    assert json.loads((tmp_path / "muted.mp4.json").read_text())["prior"] == "none"


def test_keyframe_help_names_the_file_it_writes_by_default(capsys):
    with pytest.raises(SystemExit):
        main(["keyframe", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<input name>.keyframe.png in the current folder" in text
    assert "<input name>.keyframe<K>.png with --index K" in text
