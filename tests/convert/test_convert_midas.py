"""MiDaS DPT-Hybrid conversion: every full-size key on the meta device, a ViT block's numerics at tiny size, and
(slow) the whole depth network against the original MiDaS code."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import DPTConfig, DPTForDepthEstimation, DPTModel

from ccedit.convert.keymap import KeyMapper
from ccedit.convert.midas import MIDAS_PREFIX, _map_midas, convert_midas, dpt_hybrid_config
from ccedit.errors import UserError
from tests.convert.keylists import meta_checkpoint, meta_shapes, reference_keys


@pytest.mark.parametrize("name", ["keys_tv2v.json", "keys_tvi2v.json"])
def test_full_size_keys_map_onto_dpt_hybrid(name):
    entries = reference_keys(name, "depth_estimator_midas")
    checkpoint = meta_checkpoint(reference_keys(name))
    with torch.device("meta"):
        expected = meta_shapes(DPTForDepthEstimation(dpt_hybrid_config()))

    state_dict, consumed = convert_midas(checkpoint)

    assert {key: tensor.shape for key, tensor in state_dict.items()} == expected
    assert consumed == {entry["key"] for entry in entries} and len(consumed) == 368
    # 368 keys: 12 fused qkv pairs become 36, and timm's 2 classifier keys have no target.
    assert len(state_dict) == 368 + 12 * 2 * 2 - 2


def test_block_order_reversals():
    checkpoint = meta_checkpoint(reference_keys("keys_tv2v.json", "depth_estimator_midas"))
    mapper = KeyMapper(checkpoint, MIDAS_PREFIX)
    _map_midas(mapper, num_fusion_layers=4)
    origin = {target: source.removeprefix(MIDAS_PREFIX) for target, source in mapper.origin.items()}

    # MiDaS' refinenet4 runs first, on the deepest features: transformers' fusion layer 0.
    assert origin["neck.fusion_stage.layers.0.projection.weight"] == "scratch.refinenet4.out_conv.weight"
    assert origin["neck.fusion_stage.layers.3.residual_layer1.convolution2.bias"] == (
        "scratch.refinenet1.resConfUnit1.conv2.bias"
    )
    assert origin["neck.convs.0.weight"] == "scratch.layer1_rn.weight"
    assert origin["neck.reassemble_stage.layers.3.resize.weight"] == "pretrained.act_postprocess4.4.weight"


def test_vit_block_computes_what_timm_computes(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    block = timm.models.vision_transformer.Block(dim=32, num_heads=4, mlp_ratio=2.0, qkv_bias=True).eval()
    with torch.no_grad():  # non-trivial norms, so swapped norm1/norm2 would show
        for name, parameter in block.named_parameters():
            if "norm" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    checkpoint = {f"{MIDAS_PREFIX}pretrained.model.blocks.0.{key}": value for key, value in block.state_dict().items()}
    mapper = KeyMapper(checkpoint, MIDAS_PREFIX)
    _map_midas(mapper, num_fusion_layers=4)
    assert not mapper.remaining()
    config = DPTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, layer_norm_eps=1e-6,
        image_size=32, patch_size=16,
    )
    layer = DPTModel(config, add_pooling_layer=False).encoder.layer[0].eval()
    save_file(mapper.state_dict, tmp_path / "layer.safetensors")  # the split q/k/v save like any weights
    layer_weights = {key.removeprefix("dpt.encoder.layer.0."): value for key, value in mapper.state_dict.items()}
    layer.load_state_dict(layer_weights, strict=True)
    tokens = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        expected = block(tokens)
        actual = layer(tokens)
    actual = actual[0] if isinstance(actual, tuple) else actual  # transformers 4.x returns a tuple

    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_config_matches_the_checkpoint_geometry():
    config = dpt_hybrid_config()
    assert config.is_hybrid and config.readout_type == "project"
    assert list(config.backbone_featmap_shape) == [1, 1024, 24, 24]
    assert list(config.neck_hidden_sizes) == [256, 512, 768, 768]
    assert list(config.reassemble_factors) == [1, 1, 1, 0.5]
    assert list(config.backbone_config.depths) == [3, 4, 9]


def test_missing_midas_is_reported():
    with pytest.raises(UserError, match="target keys missing"):
        convert_midas({"model.x": torch.zeros(1)})


@pytest.mark.slow
def test_depth_matches_original_midas():
    """The converted transformers model predicts the depth the original MiDaS code predicts (random weights).

    Full size at 384 px on CPU, about 20 s: `python -m pytest tests/convert -m slow -k original_midas`.
    """
    pytest.importorskip("timm")
    dpt_depth = pytest.importorskip("controlnet_aux.midas.midas.dpt_depth")
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        midas = dpt_depth.DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    midas = midas.to_empty(device="cpu").eval()
    with torch.no_grad():
        for name, parameter in midas.named_parameters():
            if parameter.ndim == 1 and "norm" in name:
                center = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(center + 0.1 * torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim == 1:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            else:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
    checkpoint = {MIDAS_PREFIX + key: value for key, value in midas.state_dict().items()}

    state_dict, consumed = convert_midas(checkpoint)
    assert consumed == set(checkpoint)
    with torch.device("meta"):
        dpt = DPTForDepthEstimation(dpt_hybrid_config())
    dpt.load_state_dict(state_dict, strict=True, assign=True)
    dpt.eval()
    # Random weights leave most of the map below zero; compare before the final ReLU so every pixel counts.
    assert isinstance(midas.scratch.output_conv[5], torch.nn.ReLU) and isinstance(dpt.head.head[5], torch.nn.ReLU)
    midas.scratch.output_conv[5] = dpt.head.head[5] = torch.nn.Identity()
    image = torch.rand(1, 3, 384, 384, generator=generator) * 2 - 1

    with torch.no_grad():
        expected = midas(image)  # (1, 384, 384)
        actual = dpt(pixel_values=image).predicted_depth

    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale)
