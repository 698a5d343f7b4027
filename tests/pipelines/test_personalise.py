"""Models users bring: LoRAs (through diffusers' PEFT loading) and personalised base models, on the tiny model."""

import copy

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from ccedit.errors import UserError
from ccedit.kinds import load_pipeline
from ccedit.pipelines.personalise import LoraSpec, load_base, load_loras
from ccedit.pipelines.tiny import tiny_components

H, W, FRAMES = 64, 64, 3


def write_lora(folder, seed: int) -> str:
    """A random (non-zero) LoRA for the tiny UNet's attention projections, saved the way diffusers saves LoRAs."""
    unet = copy.deepcopy(tiny_components(keyframe=False)["unet"])
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    StableDiffusionLoraLoaderMixin.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(unet),
                                                     safe_serialization=True)
    return str(folder)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    return [write_lora(tmp_path_factory.mktemp(f"lora{i}"), seed=i) for i in range(2)]


def random_clip(frames: int, height: int, width: int):
    """Random frames and sparse binary maps (edges-like), the same for a given size."""
    rng = np.random.RandomState(0)
    video = (rng.rand(frames, height, width, 3) * 255).astype(np.uint8)
    maps = torch.from_numpy((rng.rand(frames, 3, height, width) > 0.8).astype(np.float32))
    return video, maps


@pytest.fixture(scope="module")
def clip():
    return random_clip(FRAMES, H, W)


def edit(pipe, clip):
    video, maps = clip
    return pipe("a watercolor painting", video, [maps], num_inference_steps=2, progress=False,
                generator=torch.Generator().manual_seed(0), output_type="latent").frames


def test_a_lora_at_scale_zero_changes_nothing_and_at_one_changes_the_edit(loras, clip):
    plain = edit(load_pipeline("tiny"), clip)
    zero = load_pipeline("tiny")
    load_loras(zero, [LoraSpec(loras[0], 0.0)])
    assert torch.equal(edit(zero, clip), plain)
    one = load_pipeline("tiny")
    load_loras(one, [LoraSpec(loras[0], 1.0)])
    assert (edit(one, clip) - plain).abs().max() > 1e-3


def test_two_loras_compose(loras, clip):
    outputs = {}
    for name, specs in {"a": [LoraSpec(loras[0])], "b": [LoraSpec(loras[1])],
                        "ab": [LoraSpec(loras[0]), LoraSpec(loras[1])]}.items():
        pipe = load_pipeline("tiny")
        load_loras(pipe, specs)
        outputs[name] = edit(pipe, clip)
    assert (outputs["ab"] - outputs["a"]).abs().max() > 1e-3 and (outputs["ab"] - outputs["b"]).abs().max() > 1e-3
    fused = load_pipeline("tiny")
    load_loras(fused, [LoraSpec(loras[0]), LoraSpec(loras[1])], fuse=True)
    # fusing folds the same update into the weights: equal up to rounding (which guidance amplifies)
    assert (edit(fused, clip) - outputs["ab"]).norm() / (outputs["ab"] - outputs["a"]).norm() < 1e-2


def personalised_base(folder) -> str:
    """An SD-1.5-shaped base of the tiny geometry with other weights: a 'personalised' model folder."""
    unet = tiny_components(keyframe=False)["unet"]
    other = UNet2DConditionModel.from_config(unet.config)
    torch.manual_seed(7)
    with torch.no_grad():
        for p, q in zip(other.parameters(), unet.parameters()):
            p.copy_(q + 0.05 * torch.randn_like(q))
    other.save_pretrained(folder / "unet")
    return str(folder)


def test_a_base_model_and_a_lora_give_the_same_edit_in_either_order(loras, clip, tmp_path):
    base = personalised_base(tmp_path)
    first_base = load_pipeline("tiny")
    load_base(first_base, base)
    load_loras(first_base, [LoraSpec(loras[0], 0.7)])
    first_lora = load_pipeline("tiny")
    load_loras(first_lora, [LoraSpec(loras[0], 0.7)])
    load_base(first_lora, base)
    assert torch.equal(edit(first_base, clip), edit(first_lora, clip))
    assert (edit(first_base, clip) - edit(load_pipeline("tiny"), clip)).abs().max() > 1e-3


def test_a_base_of_another_family_and_a_foreign_lora_are_one_line_errors(loras, tmp_path):
    pipe = load_pipeline("tiny")
    unet = tiny_components(keyframe=False)["unet"]
    wider = UNet2DConditionModel.from_config({**unet.config, "cross_attention_dim": 64})  # like SDXL's 2048 vs 768
    wider.save_pretrained(tmp_path / "xl" / "unet")
    with pytest.raises(UserError, match="cross_attention_dim"):
        load_base(pipe, str(tmp_path / "xl"))
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)},
              str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="cannot load the LoRA"):
        load_loras(pipe, [LoraSpec(str(tmp_path / "foreign.safetensors"))])
    with pytest.raises(UserError, match="LoRA not found"):
        load_loras(pipe, [LoraSpec(str(tmp_path / "missing.safetensors"))])


def test_a_single_file_base_in_the_original_layout_equals_the_diffusers_format_one(tmp_path):
    from safetensors.torch import save_file

    from ccedit.convert.fixtures import load_fixture
    from ccedit.convert.networks import load_trident
    from ccedit.pipelines.personalise import _read_base
    from tests.conftest import REFERENCE, require

    fixture = load_fixture(require(REFERENCE / "tiny_tv2v.safetensors"))
    unet = load_trident(fixture.state, fixture.geometry, prefix="", source="fixture").main.unet
    # the fixture's base UNet keys are the original SD layout: written as a single-file checkpoint
    original = {f"model.diffusion_model.{k}": v.contiguous() for k, v in fixture.state.items()
                if not k.startswith("controlnet") and "temporal" not in k}
    save_file(original, str(tmp_path / "base.safetensors"))
    loaded, text_encoder, vae = _read_base(str(tmp_path / "base.safetensors"), unet.config, torch.float32)
    assert text_encoder is None and vae is None
    expected = unet.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)


def test_model_lora_from_the_command_line_is_recorded_in_the_sidecar(loras, tmp_path, capsys):
    import json

    from ccedit.cli import main
    from tests.conftest import VIDEOS

    out = tmp_path / "o.mp4"
    args = ["edit", str(VIDEOS / "kitten.mp4"), "--prompt", "x", "--model", "tiny", "--frames", "3",
            "--steps", "1", f"structure.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "-o", str(out), f"model.lora=[{{path: {loras[0]}, scale: 0.5}}]"]) == 0
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["config"]["model"]["lora"] == [{"path": loras[0], "scale": 0.5}]
    assert main([*args, "-o", str(tmp_path / "bad.mp4"), f"model.lora=[{{path: {tmp_path}/nope.safetensors}}]"]) == 2
    assert "LoRA not found" in capsys.readouterr().err
