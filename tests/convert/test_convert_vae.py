"""VAE conversion: every full-size key on the meta device, and real values and computations at tiny size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from ccedit.convert.checkpoint import open_state_dict
from ccedit.convert.vae import VAE_PREFIX, convert_vae, sd15_vae_config
from ccedit.errors import UserError
from tests.convert.keylists import meta_checkpoint, meta_shapes, reference_keys

EMBEDDER_PREFIX = "conditioner.embedders.2.first_stage_model."
# Channel widths of the SD-1.5 VAE -> the tiny test VAE; 3 (RGB), 4 and 8 (latent, moments) and kernels stay.
TINY_WIDTHS = {128: 8, 256: 16, 512: 32}
TINY_CONFIG = {**sd15_vae_config(), "block_out_channels": [8, 16, 32, 32], "norm_num_groups": 4, "sample_size": 32}


def tiny_ldm_vae(seed: int = 0) -> dict[str, torch.Tensor]:
    """An ldm-named VAE state dict with the released names and the SD-1.5 shapes shrunk by `TINY_WIDTHS`.

    Built from the reference key listing, not from diffusers, so a naming slip on either side shows up.
    """
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for entry in reference_keys("keys_tv2v.json", "vae"):
        shape = [TINY_WIDTHS.get(size, size) if dim < 2 else size for dim, size in enumerate(entry["shape"])]
        state_dict[entry["key"]] = torch.randn(shape, generator=generator)
    return state_dict


def ldm_attention(x: torch.Tensor, weights: dict[str, torch.Tensor], groups: int) -> torch.Tensor:
    """ldm's VAE `AttnBlock`: single-head self-attention over pixels with 1x1-convolution projections."""
    h = F.group_norm(x, groups, weights["norm.weight"], weights["norm.bias"], eps=1e-6)
    q, k, v = (F.conv2d(h, weights[f"{name}.weight"], weights[f"{name}.bias"]) for name in "qkv")
    b, c, height, width = q.shape
    q = q.reshape(b, c, height * width).permute(0, 2, 1)  # (b, hw, c)
    k = k.reshape(b, c, height * width)  # (b, c, hw)
    attention = torch.softmax(q @ k * c**-0.5, dim=-1)  # (b, hw_q, hw_k)
    v = v.reshape(b, c, height * width)  # (b, c, hw_k)
    out = (v @ attention.transpose(1, 2)).reshape(b, c, height, width)
    return x + F.conv2d(out, weights["proj_out.weight"], weights["proj_out.bias"])


@pytest.mark.parametrize("name", ["keys_tv2v.json", "keys_tvi2v.json"])
def test_full_size_keys_map_onto_diffusers_autoencoder(name):
    entries = reference_keys(name, "vae", "vae_duplicate_via_vae_embedder")
    checkpoint = meta_checkpoint(reference_keys(name))
    with torch.device("meta"):
        expected = meta_shapes(AutoencoderKL(**sd15_vae_config()))

    state_dict, consumed = convert_vae(checkpoint)

    assert {key: tensor.shape for key, tensor in state_dict.items()} == expected
    assert consumed == {entry["key"] for entry in entries}
    assert len(state_dict) == 248
    assert len(consumed) == (496 if name == "keys_tvi2v.json" else 248)


def test_tiny_vae_loads_strictly_and_matches_an_independent_converter():
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    checkpoint = tiny_ldm_vae()
    state_dict, consumed = convert_vae(checkpoint, TINY_CONFIG)

    assert consumed == set(checkpoint)
    AutoencoderKL(**TINY_CONFIG).load_state_dict(state_dict, strict=True)
    # diffusers' single-file loader maps the same names with its own code: values must agree key by key, which
    # catches swapped levels of equal shape (the decoder's up.2 / up.3 are both 32 -> 32 channels here).
    oracle = convert_ldm_vae_checkpoint(dict(checkpoint), TINY_CONFIG)
    assert oracle.keys() == state_dict.keys()
    for key, tensor in state_dict.items():
        assert torch.equal(tensor, oracle[key].reshape(tensor.shape)), key


def test_vae_from_a_lightning_file_converts_and_saves(tmp_path):
    # The path the convert command takes: memory-mapped file -> converter -> safetensors.
    checkpoint = tiny_ldm_vae()
    copy = {EMBEDDER_PREFIX + key[len(VAE_PREFIX) :]: tensor for key, tensor in checkpoint.items()}
    torch.save({"state_dict": checkpoint | copy, "epoch": 0}, tmp_path / "tvi2v.ckpt")

    state_dict, consumed = convert_vae(open_state_dict(tmp_path / "tvi2v.ckpt"), TINY_CONFIG)
    save_file(state_dict, tmp_path / "vae.safetensors")

    assert consumed == set(checkpoint) | set(copy)
    reference, _ = convert_vae(checkpoint, TINY_CONFIG)
    saved = load_file(tmp_path / "vae.safetensors")
    assert saved.keys() == reference.keys()
    assert all(torch.equal(saved[key], reference[key]) for key in reference)


def test_mid_block_attention_computes_what_ldm_computes():
    checkpoint = tiny_ldm_vae()
    state_dict, _ = convert_vae(checkpoint, TINY_CONFIG)
    vae = AutoencoderKL(**TINY_CONFIG).eval()
    vae.load_state_dict(state_dict, strict=True)
    x = torch.randn(2, 32, 4, 6, generator=torch.Generator().manual_seed(1))

    for part in ("encoder", "decoder"):
        prefix = f"{VAE_PREFIX}{part}.mid.attn_1."
        weights = {key[len(prefix) :]: value for key, value in checkpoint.items() if key.startswith(prefix)}
        with torch.no_grad():
            expected = ldm_attention(x, weights, groups=TINY_CONFIG["norm_num_groups"])
            actual = getattr(vae, part).mid_block.attentions[0](x)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_identical_embedder_copy_is_consumed_with_the_vae():
    checkpoint = tiny_ldm_vae()
    copy = {EMBEDDER_PREFIX + key[len(VAE_PREFIX) :]: tensor.clone() for key, tensor in checkpoint.items()}

    state_dict, consumed = convert_vae(checkpoint | copy, TINY_CONFIG)

    assert consumed == set(checkpoint) | set(copy)
    reference, _ = convert_vae(checkpoint, TINY_CONFIG)
    assert all(torch.equal(state_dict[key], reference[key]) for key in reference)


def test_embedder_copy_alone_is_converted():
    checkpoint = tiny_ldm_vae()
    copy = {EMBEDDER_PREFIX + key[len(VAE_PREFIX) :]: tensor for key, tensor in checkpoint.items()}

    state_dict, consumed = convert_vae(copy, TINY_CONFIG)

    assert consumed == set(copy)
    reference, _ = convert_vae(checkpoint, TINY_CONFIG)
    assert all(torch.equal(state_dict[key], reference[key]) for key in reference)


def test_differing_embedder_copy_is_an_error():
    checkpoint = tiny_ldm_vae()
    copy = {EMBEDDER_PREFIX + key[len(VAE_PREFIX) :]: tensor.clone() for key, tensor in checkpoint.items()}
    copy[EMBEDDER_PREFIX + "decoder.conv_out.bias"] += 1
    with pytest.raises(UserError, match=r"differ .*decoder\.conv_out\.bias"):
        convert_vae(checkpoint | copy, TINY_CONFIG)


def test_unknown_vae_key_is_reported():
    checkpoint = tiny_ldm_vae() | {f"{VAE_PREFIX}encoder.mid.attn_2.q.weight": torch.zeros(32, 32, 1, 1)}
    with pytest.raises(UserError, match=r"1 checkpoint keys not mapped \(first_stage_model\.encoder\.mid\.attn_2"):
        convert_vae(checkpoint, TINY_CONFIG)


def test_missing_vae_is_reported():
    checkpoint = {key: value for key, value in tiny_ldm_vae().items() if "decoder.up.1." not in key}
    with pytest.raises(UserError, match=r"target keys missing \(decoder\.up_blocks\.2\."):
        convert_vae(checkpoint, TINY_CONFIG)
    with pytest.raises(UserError, match="no first_stage_model"):
        convert_vae({"model.x": torch.zeros(1)})
