"""The Wan-VACE kind where users meet it: `ccedit models`, a Wan-VACE folder checked before any frame is decoded,
LoRAs and bases, reference images."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from ccedit.cli import main
from ccedit.errors import UserError
from ccedit.kinds import load_pipeline
from tests.pipelines.test_personalise import edit, random_clip, write_lora

TINY = "wan-vace-tiny"
H = W = 32
FRAMES = 5


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    """The tiny random Wan-VACE saved as a model folder in diffusers' layout."""
    from ccedit.pipelines.pipeline_wan_vace import WanVACEEditPipeline
    from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts

    folder = tmp_path_factory.mktemp("wan") / "tiny-wan-vace"
    WanVACEEditPipeline(**tiny_wan_vace_parts()).save_pretrained(folder)
    return folder


def write_wan_lora(folder, seed: int) -> str:
    """A random (non-zero) LoRA for the tiny transformer's attention projections, saved as diffusers saves one."""
    from diffusers import WanVACEPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts

    transformer = copy.deepcopy(tiny_wan_vace_parts()["transformer"])
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    WanVACEPipeline.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(transformer),
                                      safe_serialization=True)
    return str(folder)


def test_models_lists_the_parts_of_a_wan_folder_the_release_and_the_tiny_one(wan_folder, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    assert main(["models", "--model", str(wan_folder)]) == 0
    out = capsys.readouterr().out
    assert "kind: Wan2.1-VACE" in out
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert f"{wan_folder / part}  [local folder]" in out
    assert "causal video VAE" in out and "UMT5 text encoder" in out
    broken = tmp_path / "broken"
    shutil.copytree(wan_folder, broken)
    shutil.rmtree(broken / "vae")
    assert main(["models", "--model", str(broken)]) == 0
    assert f"{broken / 'vae'}  [local folder (missing vae)]" in capsys.readouterr().out
    assert main(["models", "--model", "wan-vace"]) == 0
    out = capsys.readouterr().out
    assert "Wan-AI/Wan2.1-VACE-1.3B-diffusers/transformer  [hub id, not downloaded: run `hf download" in out
    assert main(["models", "--model", TINY]) == 0
    assert "built in: a tiny random Wan2.1-VACE" in capsys.readouterr().out


def test_a_wan_folder_missing_a_part_is_refused_before_any_frame_is_decoded(wan_folder, tmp_path, capsys,
                                                                             monkeypatch):
    import ccedit.editing
    import ccedit.preparation
    from tests.conftest import VIDEOS

    broken = tmp_path / "broken"
    shutil.copytree(wan_folder, broken)
    shutil.rmtree(broken / "vae")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    for module in (ccedit.preparation, ccedit.editing):
        monkeypatch.setattr(module, "prepare_clip", no_decoding)
    assert main(["edit", str(VIDEOS / "kitten.mp4"), "--prompt", "x", "-o", str(tmp_path / "o.mp4"),
                 "--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no vae/" in err and str(broken) in err


@pytest.fixture(scope="module")
def clip():
    return random_clip(FRAMES, H, W)


def wan_pipeline(**options):
    return load_pipeline(TINY, scheduler="unipc", dtype="float32", device="cpu", **options)


def test_a_wan_lora_loads_with_its_scale(tmp_path, clip):
    lora = write_wan_lora(tmp_path / "wan-lora", seed=0)
    plain = edit(wan_pipeline(), clip)
    assert torch.equal(edit(wan_pipeline(loras=[{"path": lora, "scale": 0.0}]), clip), plain)
    one = edit(wan_pipeline(loras=[{"path": lora, "scale": 1.0}]), clip)
    half = edit(wan_pipeline(loras=[{"path": lora, "scale": 0.5}]), clip)
    assert (one - plain).abs().mean() > (half - plain).abs().mean() > 0


def test_an_sd_lora_and_a_base_are_refused_in_one_line_naming_what_they_are_for(tmp_path):
    from safetensors.torch import save_file

    sd_lora = write_lora(tmp_path / "sd-lora", seed=0)  # diffusers' names: unet.down_blocks...
    kohya = tmp_path / "kohya.safetensors"  # kohya's names: lora_unet_down_blocks_...
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(kohya))
    for path in (sd_lora, str(kohya)):
        with pytest.raises(UserError, match="is for a Stable Diffusion UNet and text encoder") as refused:
            wan_pipeline(loras=[{"path": path}])
        assert "\n" not in str(refused.value) and path in str(refused.value)
    with pytest.raises(UserError, match="model.base replaces an SD-1.5 UNet"):
        wan_pipeline(base=str(tmp_path / "some-sd15"))


def _capture_control(monkeypatch) -> list[torch.Tensor]:
    """Every `control_hidden_states` the transformer of the pipelines loaded from now on receives, in call order."""
    import ccedit.kinds as kinds

    seen: list[torch.Tensor] = []
    load = kinds.load_pipeline

    def load_and_hook(*args, **kwargs):
        pipe = load(*args, **kwargs)
        pipe.transformer.register_forward_pre_hook(
            lambda module, args, kw: seen.append(kw["control_hidden_states"].detach().float().cpu()), with_kwargs=True)
        seen.append(pipe)  # first: the pipeline, whose VAE the test encodes with
        return pipe

    monkeypatch.setattr(kinds, "load_pipeline", load_and_hook)
    return seen


def _vae_encoding(vae, image: np.ndarray) -> torch.Tensor:
    """`image` (uint8 HWC) as Wan's VAE encodes one frame: [-1, 1], the posterior's mode, normalised by the VAE's
    latent statistics. `(16, h, w)`."""
    x = (torch.from_numpy(image).float() / 255 * 2 - 1).permute(2, 0, 1)[None, :, None]
    z = vae.encode(x).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return ((z - mean) / std)[0, :, 0]


def test_reference_images_reach_vace_as_one_latent_frame_each_of_the_fitted_image(tmp_path, monkeypatch):
    from ccedit.io import fit_image, read_image, write_image
    from tests.conditioning import write_moving_disk_clip

    clip = write_moving_disk_clip(tmp_path / "clip", num_frames=FRAMES)
    rng = np.random.RandomState(1)
    wide = tmp_path / "wide.png"  # another size and shape than the frames: fitted (cropped) to them
    write_image(wide, (rng.rand(40, 96, 3) * 255).astype(np.uint8))
    exact = tmp_path / "exact.png"
    write_image(exact, (rng.rand(64, 64, 3) * 255).astype(np.uint8))
    args = ["edit", str(clip), "--prompt", "x", "--model", TINY, "--frames", str(FRAMES), "--steps", "1",
            "--height", "64", "--width", "64", "structure.cache_dir=null"]
    seen = _capture_control(monkeypatch)
    assert main([*args, "-o", str(tmp_path / "plain.mp4")]) == 0
    plain = seen[1]
    seen.clear()
    out = tmp_path / "o.mp4"
    assert main([*args, "-o", str(out), "--reference", str(wide), "--reference", str(exact)]) == 0
    pipe, control = seen[0], seen[1]
    assert control.shape[2] == plain.shape[2] + 2  # one latent frame per reference, in front of the clip's
    fitted = [fit_image(read_image(p), (64, 64), "crop")[0] for p in (wide, exact)]
    with torch.no_grad():
        # The last reference first, as diffusers' WanVACEPipeline orders them.
        for slot, image in enumerate(reversed(fitted)):
            torch.testing.assert_close(control[0, :16, slot], _vae_encoding(pipe.vae, image), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(control[:, :, 2:], plain)  # the clip's own context is unchanged
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["references"] == [{"path": str(wide), "source_size": [96, 40]},
                                     {"path": str(exact), "source_size": [64, 64]}]
    assert sidecar["config"]["sampling"]["references"] == [str(wide), str(exact)]


def test_a_model_without_reference_images_refuses_them_before_any_frame_is_decoded(tmp_path, capsys, monkeypatch):
    import ccedit.editing
    import ccedit.plan
    import ccedit.preparation
    from tests.conftest import VIDEOS

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    for module in (ccedit.preparation, ccedit.editing):
        monkeypatch.setattr(module, "prepare_clip", no_decoding)
    image = tmp_path / "ref.png"
    image.write_bytes(b"")
    for extra in ([], ["--dry-run"]):
        assert main(["edit", str(VIDEOS / "kitten.mp4"), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model",
                     "tiny", "--reference", str(image), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "tiny takes no reference images" in err and TINY in err
    assert main(["edit", str(VIDEOS / "kitten.mp4"), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model",
                 TINY, "--reference", str(tmp_path / "missing.png")]) == 2
    assert "reference image" in capsys.readouterr().err
