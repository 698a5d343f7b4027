"""The edit session and the edit job: one model load for many jobs, results in memory, writing a separate step."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ccedit.config import EditJob, KeyframeSpec, VideoConfig, load_edit_config
from ccedit.edit_record import EditRecord
from ccedit.editing import EditSession, run_edit, write_edit_outputs
from ccedit.errors import UserError
from ccedit.io import read_video
from ccedit.methods import METHODS, build_method
from tests.conftest import REPO, VIDEOS


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


def tiny_config(tmp_path, *more):
    return load_edit_config(dotlist=["video.num_frames=3", "sampling.num_inference_steps=1",
                                     f"structure.cache_dir={tmp_path / 'cache'}", *more])


def test_a_session_loads_once_edits_in_memory_and_writes_only_when_asked(tmp_path, kitten, monkeypatch):
    import ccedit.kinds as kinds

    loads = []
    real = kinds.load_pipeline
    monkeypatch.setattr(kinds, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    cfg = tiny_config(tmp_path)
    session = EditSession(cfg)
    first = session.edit(EditJob(input=kitten, prompt="a dog"))
    second = session.edit(EditJob(input=kitten, prompt="a cat", keyframes=[KeyframeSpec("auto", 1)]))
    assert len(loads) == 1
    assert first.frames.dtype == np.uint8 and first.frames.shape == (3, 128, 128, 3)
    assert first.maps[0].shape == (3, 3, 128, 128) and first.record.prompt == "a dog"
    assert second.keyframe_indices == [1] and second.keyframes[0].shape == (128, 128, 3)
    assert not (first.frames == second.frames).all()  # the prompts differ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # nothing written but the structure cache

    out = tmp_path / "out" / "o.mp4"
    sidecar = write_edit_outputs(second, out, cfg)
    assert sidecar["keyframes"][0]["path"] == str(out.with_name("o.keyframe1.png"))
    assert json.loads((out.parent / "o.mp4.json").read_text())["prompt"] == "a cat"
    assert len(read_video(out).frames) == 3


SIDECAR_KEYS = ["output", "input", "prompt", "full_prompt", "seed", "keyframes", "references", "prior", "video",
                "windows", "mask", "outputs", "config", "device", "dtype", "versions", "timings_seconds",
                "peak_memory_bytes"]


def test_the_sidecar_is_the_edit_record_field_by_field_in_its_order(tmp_path, kitten):
    cfg = tiny_config(tmp_path, "output.gif=true")
    result = EditSession(cfg).edit(EditJob(input=kitten, prompt="a dog", keyframes=[KeyframeSpec("auto", 2)]))
    record = result.record
    assert isinstance(record, EditRecord) and record.output is None and record.outputs is None  # not written yet
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.prompt = "a cat"
    assert [f.name for f in dataclasses.fields(EditRecord)] == SIDECAR_KEYS
    assert record.full_prompt == f"{cfg.sampling.add_prompt}, a dog" and record.seed == cfg.sampling.seed
    assert record.keyframes[0]["path"] == "auto" and record.keyframes[0]["index"] == 2
    assert result.timings is record.timings_seconds and list(record.timings_seconds)[:2] == ["structure",
                                                                                             "auto_keyframes"]

    out = tmp_path / "o.mp4"
    returned = write_edit_outputs(result, out, cfg)
    text = (tmp_path / "o.mp4.json").read_text()
    written = json.loads(text)
    assert list(written) == SIDECAR_KEYS and written == json.loads(json.dumps(returned))
    assert text == json.dumps(returned, indent=2) + "\n"
    assert written["output"] == str(out) and written["outputs"] == {
        "gif": str(tmp_path / "o.gif"), "keyframe2": str(tmp_path / "o.keyframe2.png")}
    assert written["keyframes"][0]["path"] == str(tmp_path / "o.keyframe2.png")
    assert record.keyframes[0]["path"] == "auto"  # the in-memory record is left as it was
    assert written["timings_seconds"]["wall"] >= record.timings_seconds["structure"]


def test_run_edit_is_a_session_edit_then_the_write(tmp_path, kitten):
    cfg = tiny_config(tmp_path, "output.frames=true")
    sidecar = run_edit(kitten, "a dog", tmp_path / "a.mp4", cfg)
    in_memory = EditSession(cfg).edit(EditJob(input=kitten, prompt="a dog"))
    # The same seed and settings: the lossless frames written equal the frames held in memory.
    written = read_video(tmp_path / "a_frames", folder_fps=cfg.video.folder_fps).frames
    np.testing.assert_array_equal(written, in_memory.frames)
    assert sidecar["video"] == in_memory.record.video and sidecar["output"] == str(tmp_path / "a.mp4")


def test_the_ccedit_method_runs_a_job_and_describes_its_resolved_settings(tmp_path, kitten):
    method = build_method("ccedit", VideoConfig(num_frames=2), overrides=["sampling.num_inference_steps=1",
                                                                         f"structure.cache_dir={tmp_path}"])
    described = method.describe()
    assert described["config"]["video"]["num_frames"] == 2 and "cache_dir" not in described["config"]["structure"]
    out = method.run(EditJob(input=kitten, prompt="a dog"), {})
    assert out.frames.shape == (2, 128, 128, 3) and out.structure.shape == (2, 128, 128, 3) and out.seconds > 0


def test_unknown_method_types_and_options_list_the_valid_ones():
    with pytest.raises(UserError, match="unknown method type 'nope': choose one of .*ccedit"):
        build_method("nope", VideoConfig())
    with pytest.raises(UserError, match="has no option colour: its options are config, overrides"):
        build_method("ccedit", VideoConfig(), colour=1)
    assert "ccedit" in METHODS


def test_convert_does_not_import_the_pipelines():
    # Hub and folder resolution lives in ccedit.hub, so convert and the pipelines no longer import each other.
    code = ("import sys, ccedit.convert.convert; "
            "print(sorted(m for m in sys.modules if m.startswith('ccedit.pipelines')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_session_loads_the_pipeline_with_the_configured_convolution_layout(tmp_path, channels_last):
    pipe = EditSession(tiny_config(tmp_path, f"model.channels_last={str(channels_last).lower()}")).pipe
    weight = pipe.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert pipe.vae.encoder.conv_in.weight.is_contiguous() is not channels_last
