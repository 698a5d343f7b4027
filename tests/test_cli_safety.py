"""The command line under damaged caches and bad input: the result of a clean run, or one error line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ccedit.cli import main
from ccedit.io import read_video
from tests.conftest import VIDEOS

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1"]


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


def one_error_line(capsys) -> str:
    """The single `error:` line on stderr, with no traceback."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_an_edit_over_a_damaged_cache_equals_a_cold_run(tmp_path, kitten):
    cold, warm = tmp_path / "cold.mp4", tmp_path / "warm.mp4"
    args = ["edit", kitten, "--prompt", "a cat", *FAST, "--height", "64", f"structure.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "-o", str(cold)]) == 0
    (entry,) = (tmp_path / "cache").rglob("*.safetensors")
    data = bytearray(entry.read_bytes())
    data[-64:] = b"\xff" * 64  # float16 0xffff is NaN
    entry.write_bytes(bytes(data))
    assert main([*args, "-o", str(warm)]) == 0
    assert (read_video(warm).frames == read_video(cold).frames).all()


# Bad settings: one line naming the setting, exit 2, before any model loads.


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (["--start", "inf"], "video.start (--start) must be a finite number"),
        (["--fps", "nan"], "video.fps (--fps) must be a finite number"),
        (["--fps", "0"], "video.fps (--fps) must be at least"),
        (["--height", "64000000"], "video.height (--height) must be from 64 to 8192"),
        (["--width", "0"], "video.width (--width) must be from 64"),
        (["--frames", "100000000000000"], "video.num_frames (--frames) must be from 1 to"),
        (["--steps", "100000000"], "--steps) must be from 1 to 1000"),
        (["--seed", "99999999999999999999999"], "sampling.seed (--seed) must be from 0 to"),
        (["model.native_frames=0"], "model.native_frames must be from 1"),
        (["sampling.guidance_scale=nan"], "sampling.guidance_scale must be a finite number"),
        (["structure.scales=[1.0,-inf]"], "structure.scales.1 must be a finite number"),
        (["structure.cache_max_gb=-1"], "structure.cache_max_gb must be at least 0"),
        (["sampling.steps=3", "sampling.seed=[1,"], "invalid YAML in the setting 'sampling.seed=[1,'"),
        (["sampling.negative_prompt=${oc.env:HOME}"], "calls the resolver `oc.env`"),
        (["sampling.negative_prompt=${oc.decode:${oc.env:HOME}}"], "calls the resolver `oc.decode`"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, kitten, capsys, monkeypatch, setting, expected):
    import ccedit.kinds as kinds

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model should not load")

    monkeypatch.setattr(kinds, "load_pipeline", must_not_load)
    assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, *setting]) == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [1,\n", "line 2, column 1"),
        ("sampling:\n\tseed: 1\n", "line 2, column 1"),
        ("sampling:\n  negative_prompt: ${oc.env:HOME}\n", "`sampling.negative_prompt` calls the resolver `oc.env`"),
        (b"\xff\xfe\x00binary", "not UTF-8 text"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, kitten, capsys, text, expected):
    config = tmp_path / "settings.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["keyframe", kitten, "-o", str(tmp_path / "k.png"), "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert expected in line and "settings.yaml" in line, line


def test_environment_values_never_reach_the_sidecar(tmp_path, kitten, monkeypatch):
    # A reference to another setting is still fine; only resolvers are refused.
    monkeypatch.setenv("CCEDIT_TEST_SECRET", "s3cr3t")
    out = tmp_path / "o.mp4"
    args = ["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, "structure.cache_dir=null"]
    assert main([*args, "sampling.negative_prompt=${oc.env:CCEDIT_TEST_SECRET}"]) == 2
    assert not out.exists()
    assert main([*args, "sampling.negative_prompt=${sampling.add_prompt}"]) == 0
    sidecar = (tmp_path / "o.mp4.json").read_text()
    assert "s3cr3t" not in sidecar and '"negative_prompt": "masterpiece, high quality"' in sidecar


# Weights that exist but cannot be loaded: one line naming the component and the file; pickled code never runs.


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """The tiny model saved as a model folder, with a tiny DPT as its own depth estimator."""
    from transformers import DPTConfig, DPTForDepthEstimation

    from ccedit import CCEditPipeline
    from ccedit.pipelines.tiny import tiny_components
    from ccedit.schedulers import build_scheduler

    folder = tmp_path_factory.mktemp("model")
    components = tiny_components(keyframe=True)
    CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")}).save_pretrained(folder)
    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=16, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3],
        head_in_index=-1,
    )  # fmt: skip
    DPTForDepthEstimation(config).save_pretrained(folder / "depth_estimator")
    return folder


class _RunsCode:
    """Unpickling this calls `Path.touch(marker)`: proof that loading ran code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize(
    ("component", "weights", "what"),
    [("text_encoder", "model.safetensors", "text encoder"), ("depth_estimator", "model.safetensors", "depth model")],
)
@pytest.mark.parametrize("content", ["code", "garbage", "truncated"])
def test_unloadable_component_weights_are_one_line(tmp_path, model_folder, kitten, capsys, component, weights, what, content):
    import pickle
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_folder, model)
    marker = tmp_path / "code-ran"
    safetensors = model / component / weights
    if content == "truncated":
        safetensors.write_bytes(safetensors.read_bytes()[:-100])
        bad = safetensors
    else:
        safetensors.unlink()
        bad = model / component / "pytorch_model.bin"
        bad.write_bytes(pickle.dumps({"weight": _RunsCode(marker)}) if content == "code" else b"not weights" * 9)
    args = ["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", str(model), "--frames", "2",
            "--steps", "1", "--structure", "depth", "model.short_side=64", "structure.cache_dir=null"]  # fmt: skip
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"cannot load the {what}" in line and str(bad) in line, line
    assert not marker.exists()


# The first try: options where a new user puts them, hints that name real options, help that tells the truth.


def test_verbose_is_accepted_before_and_after_the_subcommand():
    from ccedit.cli import build_parser

    parser = build_parser()
    for argv, verbose in ((["-v", "env"], True), (["env", "-v"], True), (["keyframe", "x.mp4", "--verbose"], True),
                          (["env"], False)):  # fmt: skip
        args, _ = parser.parse_known_args(argv)
        assert args.verbose is verbose, argv


def test_an_unknown_annotator_lists_depth_before_any_model_loads(tmp_path, kitten, capsys, monkeypatch):
    import ccedit.kinds as kinds

    monkeypatch.setattr(kinds, "load_pipeline", lambda *a, **k: pytest.fail("the model should not load"))
    assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--structure", "canny,dept"]) == 2
    line = one_error_line(capsys)
    assert "'dept'" in line and "depth" in line and "canny" in line and "softedge" in line


def test_the_wrong_output_extension_hint_names_a_real_option(tmp_path, kitten, capsys):
    assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.gif"), *FAST]) == 2
    line = one_error_line(capsys)
    assert "output.gif=true" in line and "--gif" not in line


def _option_helps(parser, command, capsys) -> dict[str, str]:
    """`command --help` as {first option name: its help text, on one line}."""
    import re

    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    helps, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        start = re.match(r"^  (-[\w-]+)", line)
        if start:
            current = start.group(1)
            helps[current] = ""
        if current and line.strip():
            helps[current] += " " + line.strip()
    return helps


def test_help_shows_each_default_once_and_true(capsys):
    from ccedit.cli import build_parser
    from ccedit.config import load_edit_config

    parser = build_parser()
    for command in ("edit", "keyframe", "convert"):
        for option, text in _option_helps(parser, command, capsys).items():
            assert text.count("(default") <= 1, f"{command} {option}: {text}"
            assert not any(f"(default: {v})" in text for v in ("None", "False", "[]")), f"{command} {option}: {text}"

    helps = _option_helps(parser, "edit", capsys)
    ccedit, tiny = load_edit_config(model="ccedit-folder"), load_edit_config(model="tiny")
    steps, tiny_steps = ccedit.sampling.num_inference_steps, tiny.sampling.num_inference_steps
    assert f"(default: {steps}; {tiny_steps} for the tiny model)" in helps["--steps"]
    assert f"(default: {ccedit.sampling.seed})" in helps["--seed"]
    structure, tiny_structure = ccedit.structure.annotators[0], tiny.structure.annotators[0]
    assert f"(default: {structure}; {tiny_structure} for the tiny model)" in helps["--structure"]
    assert f"(default: {load_edit_config().model.path})" in helps["--model"]
