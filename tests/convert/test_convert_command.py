"""`ccedit convert` end to end: fixtures and a complete tiny Lightning checkpoint to a folder that edits."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from ccedit.cli import main
from ccedit.parity.parity import original_hint_remap
from ccedit.models import TridentModel
from ccedit.kinds import load_pipeline
from ccedit.pipelines.tiny import tiny_components
from tests.conftest import REFERENCE, VIDEOS, require
from tests.convert.test_convert_clip import released_layout
from tests.convert.test_convert_vae import TINY_CONFIG as TINY_VAE_CONFIG
from tests.convert.test_convert_vae import tiny_ldm_vae


def one_error_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("name", ["tiny_tvi2v", "tiny_tv2v_b1t7"])
def test_fixture_converts_to_a_folder_that_reproduces_the_original(tmp_path, name):
    fixture = require(REFERENCE / f"{name}.safetensors")
    out = tmp_path / "model"
    assert main(["convert", str(fixture), "--out", str(out), "--geometry", str(REFERENCE / "tiny_config.json")]) == 0
    assert (out / "temporal" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "appearance").is_dir() == ("tvi2v" in name)
    index = json.loads((out / "model_index.json").read_text())
    assert index["temporal"] == ["ccedit.models.temporal_adapter", "CCEditTemporalAdapter"]
    model = TridentModel.from_pretrained(out)
    t = load_file(str(fixture))
    keyframe = dict(keyframe_latent=t["input.cond_feat"]) if "tvi2v" in name else {}
    with torch.no_grad():
        y = model(t["input.x"], t["input.timesteps"], t["input.context"],
                  structure_maps=[original_hint_remap(t["input.control_hint"])], **keyframe)
    assert torch.allclose(y, t["output"], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A Lightning-style .ckpt with every part CCEdit's holds (networks, VAE twice, CLIP, sigmas) at tiny size."""
    root = tmp_path_factory.mktemp("ckpt")
    fixture = load_file(str(require(REFERENCE / "tiny_tvi2v.safetensors")))
    state = {"model.diffusion_model." + k[len("state."):]: v.float() for k, v in fixture.items() if k.startswith("state.")}
    vae = tiny_ldm_vae()
    state.update(vae)
    state.update({k.replace("first_stage_model.", "conditioner.embedders.2.first_stage_model."): v for k, v in vae.items()})
    components = tiny_components()
    state.update(released_layout(components["text_encoder"]))
    state["denoiser.sigmas"] = torch.linspace(0.03, 14.6, 1000)
    ckpt = root / "tvi2v-tiny.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 1e-5}}, ckpt)
    geometry = json.loads((REFERENCE / "tiny_config.json").read_text())["geometry"]
    geometry["vae"] = {k: v for k, v in TINY_VAE_CONFIG.items() if k in ("block_out_channels", "norm_num_groups", "sample_size")}
    geometry["text_encoder"] = components["text_encoder"].config.to_dict()
    (root / "geometry.json").write_text(json.dumps(geometry))
    components["tokenizer"].save_pretrained(root / "tokenizer")
    return root, ckpt, state


def test_full_checkpoint_converts_and_the_folder_edits_a_video(tmp_path, tiny_checkpoint, capsys):
    root, ckpt, _ = tiny_checkpoint
    out = tmp_path / "model"
    args = ["convert", str(ckpt), "--out", str(out), "--geometry", str(root / "geometry.json"), "--tokenizer", str(root / "tokenizer")]
    assert main(args) == 0
    assert "mapped" in capsys.readouterr().out
    for sub in ("unet", "temporal", "controlnet", "appearance", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / sub).is_dir(), sub
    pipe = load_pipeline(str(out))
    assert pipe.appearance is not None and pipe.text_encoder.config.hidden_size == 32
    from ccedit import CCEditPipeline

    same = CCEditPipeline.from_pretrained(out)  # the diffusers way loads the folder too
    assert torch.equal(same.temporal.conv_in.weight, pipe.temporal.conv_in.weight)
    video = str(VIDEOS / "kitten.mp4")
    result = tmp_path / "edit.mp4"
    assert main(["edit", video, "--prompt", "a dog", "--model", str(out), "--structure", "canny", "--frames", "2",
                 "--steps", "1", "model.short_side=64", "model.native_frames=2", "-o", str(result),
                 f"structure.cache_dir={tmp_path / 'cache'}"]) == 0
    assert result.is_file()
    # converting again needs --overwrite; with it the folder is replaced
    assert main(args) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert main([*args, "--overwrite", "--dtype", "float16"]) == 0
    assert load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))["conv_in.weight"].dtype == torch.float16


def _assert_refused(capsys, tmp_path, args, expected):
    out = tmp_path / "model"
    assert main(["convert", *args, "--out", str(out)]) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


def test_foreign_keys_are_refused(tmp_path, tiny_checkpoint, capsys):
    root, _, state = tiny_checkpoint
    ckpt = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {**state, "model.ema.decay": torch.tensor(0.99)}}, ckpt)
    _assert_refused(capsys, tmp_path, [str(ckpt), "--geometry", str(root / "geometry.json"), "--tokenizer", str(root / "tokenizer")],
                    "model.ema.decay")


@pytest.mark.parametrize("dropped,named", [("first_stage_model.", "VAE"), ("conditioner.embedders.0.", "CLIP text encoder")])
def test_a_checkpoint_without_vae_or_clip_is_refused_before_writing(tmp_path, tiny_checkpoint, capsys, dropped, named):
    root, _, state = tiny_checkpoint
    ckpt = tmp_path / "partial.ckpt"
    torch.save({"state_dict": {k: v for k, v in state.items() if dropped not in k}}, ckpt)
    _assert_refused(capsys, tmp_path, [str(ckpt), "--geometry", str(root / "geometry.json"), "--tokenizer", str(root / "tokenizer")],
                    f"holds no {named}")


def test_truncated_file_is_refused(tmp_path, tiny_checkpoint, capsys):
    root, ckpt, _ = tiny_checkpoint
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    _assert_refused(capsys, tmp_path, [str(cut), "--geometry", str(root / "geometry.json")], "cut.ckpt")


def test_wrong_geometry_is_refused(tmp_path, capsys):
    fixture = require(REFERENCE / "tiny_tvi2v.safetensors")
    geometry = json.loads((REFERENCE / "tiny_config.json").read_text())["geometry_b1t7"]
    (tmp_path / "g.json").write_text(json.dumps(geometry))
    _assert_refused(capsys, tmp_path, [str(fixture), "--geometry", str(tmp_path / "g.json")], "does not match the CCEdit network")


def test_unreachable_tokenizer_is_refused(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, ckpt, _ = tiny_checkpoint
    _assert_refused(capsys, tmp_path, [str(ckpt), "--geometry", str(root / "geometry.json"), "--tokenizer", "nobody/no-such-model"],
                    "tokenizer")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_running_pickle_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"state_dict": {"w": _Payload()}}, protocol=2))
        z.writestr("evil/version", "3\n")
    _assert_refused(capsys, tmp_path, [str(ckpt)], "run code")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["keys_tv2v.json", "keys_tvi2v.json"])
def test_every_key_of_the_full_size_checkpoints_has_a_place(name):
    """The converter's whole mapping (networks, VAE and its TVI2V copy, CLIP, MiDaS, sigmas) on meta tensors."""
    from ccedit.convert.convert import plan_conversion
    from ccedit.models.geometry import SD15_GEOMETRY, Geometry

    listing = json.loads(require(REFERENCE / name).read_text())
    state = {k["key"]: torch.empty(k["shape"], device="meta") for k in listing["keys"]}
    plan = plan_conversion(state, Geometry.from_dict(SD15_GEOMETRY), source=name)
    assert plan.consumed == set(state)
    assert set(plan.others) == {"vae", "text_encoder", "depth_estimator"}
    assert ("appearance" in plan.meta_modules) == ("tvi2v" in name)
