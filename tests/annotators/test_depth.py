"""Depth annotators: tiny transformers models loaded by path, the near = 1 convention, clip-global normalisation,
ZoeDepth's percentile mapping, and one-line errors for missing models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ccedit.annotators import DPTDepth, MidasDepth, ZoeDepth, build_annotator
from ccedit.annotators.depth import normalize_disparity, normalize_metric_depth
from ccedit.errors import ModelNotFoundError, UserError

TINY_DPT = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=37,
    image_size=32,
    patch_size=16,
    neck_hidden_sizes=[8, 16, 32, 32],
    fusion_hidden_size=16,
    backbone_out_indices=[0, 1, 2, 3],
    head_in_index=-1,
)
TINY_BIT = dict(
    model_type="bit",
    global_padding="same",
    layer_type="bottleneck",
    depths=[1, 1, 1],
    hidden_sizes=[8, 16, 32],
    out_features=["stage1", "stage2", "stage3"],
    embedding_dynamic_padding=True,
    num_groups=2,
)


def save_tiny_dpt(folder, is_hybrid: bool = False) -> str:
    """A randomly initialised DPT (or DPT-Hybrid) depth model and a 32x32 image processor saved to `folder`."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    if is_hybrid:
        config = DPTConfig(
            **TINY_DPT,
            is_hybrid=True,
            readout_type="project",
            backbone_config=TINY_BIT,
            backbone_featmap_shape=[1, 32, 2, 2],
        )
    else:
        config = DPTConfig(**TINY_DPT)
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


class BrightIsNear(torch.nn.Module):
    """A stand-in depth model whose inverse depth is the pixel brightness, in the output format of transformers."""

    def forward(self, pixel_values):
        return SimpleNamespace(predicted_depth=pixel_values.mean(dim=1) + 1.0)  # [-1, 1] in -> [0, 2], (b, h, w)


def brightness(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float().mean(dim=-1).unsqueeze(1) / 255.0  # (T, 1, H, W)


def two_level_clip() -> np.ndarray:
    """Four frames whose second half is brighter (nearer): per-frame and clip-global normalisation differ."""
    rng = np.random.default_rng(1)
    frames = np.empty((4, 24, 40, 3), dtype=np.uint8)
    frames[:2] = rng.integers(40, 100, size=(2, 24, 40, 3))
    frames[2:] = rng.integers(150, 250, size=(2, 24, 40, 3))
    return frames


@pytest.mark.parametrize("is_hybrid", [False, True], ids=["dpt", "dpt_hybrid"])
def test_tiny_dpt_from_folder_ccedit_mode(tmp_path, check_maps, is_hybrid):
    folder = save_tiny_dpt(tmp_path / "dpt", is_hybrid=is_hybrid)
    annotator = DPTDepth(folder, preprocess="ccedit", batch_size=2)
    # Not square and not a multiple of 32: padded to 64x96 for the network and cropped back.
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 40, 72, 3), dtype=np.uint8)
    maps = annotator(frames)
    check_maps(maps, frames)
    assert float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0)
    assert annotator.size_multiple == 32
    # The same frames give the same maps whatever the batching.
    torch.testing.assert_close(DPTDepth(folder, batch_size=3)(frames), maps)


def test_tiny_dpt_from_folder_processor_mode(tmp_path, check_maps):
    folder = save_tiny_dpt(tmp_path / "dpt")
    annotator = build_annotator("depth_dpt", model=folder, preprocess="processor")
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 40, 72, 3), dtype=np.uint8)
    check_maps(annotator(frames), frames)
    assert annotator.cache_key() != DPTDepth(folder).cache_key()


def test_dpt_to_dtype_and_cache_key(tmp_path, clip, check_maps):
    folder = save_tiny_dpt(tmp_path / "dpt")
    annotator = DPTDepth(folder)
    key = annotator.cache_key()
    assert key["model"] == folder and key["weights"] and key["preprocess"] == "ccedit"
    annotator.to("cpu", torch.float64)
    assert next(annotator.model.parameters()).dtype == torch.float64
    assert annotator.cache_key() != key
    check_maps(annotator(clip), clip)


def test_dpt_near_is_one():
    frames = np.zeros((1, 32, 64, 3), dtype=np.uint8)
    frames[:, :, :32] = 255  # bright (near) left half, dark (far) right half
    maps = DPTDepth(BrightIsNear())(frames)
    assert (maps[0, :, :, :32] == 1.0).all() and (maps[0, :, :, 32:] == 0.0).all()


def test_dpt_depth_is_normalised_over_the_clip_not_per_frame():
    frames = two_level_clip()
    maps = DPTDepth(BrightIsNear(), batch_size=1)(frames)
    expected = normalize_disparity(brightness(frames)).expand(-1, 3, -1, -1)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)
    # Per-frame normalisation would stretch every frame to [0, 1]; globally the dim frames stay below the bright.
    assert float(maps[:2].max()) < 0.5 < float(maps[2:].min())
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0


def test_dpt_metric_models_are_inverted():
    frames = np.zeros((1, 32, 64, 3), dtype=np.uint8)
    frames[:, :, :32] = 255
    # A metric model reports large values for far pixels: the dark half has the larger depth.
    maps = DPTDepth(BrightIsNear(), is_metric=True)(255 - frames)
    assert (maps[0, :, :, :32] == 1.0).all() and (maps[0, :, :, 32:] == 0.0).all()


def test_midas_uses_ccedit_convention_and_global_normalisation():
    class MidasStandIn(torch.nn.Module):
        def forward(self, pixels):
            assert pixels.shape[-2:] == (32, 64)  # 24x40 padded to multiples of 32
            assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
            return pixels.mean(dim=1) + 1.0  # (b, H, W) inverse depth

    frames = two_level_clip()
    maps = MidasDepth(MidasStandIn(), batch_size=2)(frames)
    expected = normalize_disparity(brightness(frames)).expand(-1, 3, -1, -1)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


def test_zoe_percentiles_over_the_clip():
    class ZoeStandIn(torch.nn.Module):
        def infer(self, pixels):
            assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
            return 1.0 + 10.0 * (1.0 - pixels.mean(dim=1, keepdim=True))  # metric depth, bright = near

    frames = two_level_clip()
    maps = ZoeDepth(ZoeStandIn(), batch_size=1)(frames)
    depth = 1.0 + 10.0 * (1.0 - brightness(frames))
    low, high = np.percentile(depth.numpy(), [2, 85])
    expected = 1.0 - ((depth - low) / (high - low)).clamp(0, 1)
    torch.testing.assert_close(maps[:, :1], expected, atol=1e-5, rtol=0)
    assert float(maps[:2].max()) < 0.5 < float(maps[2:].min())  # percentiles of the clip, not of each frame
    assert float(maps.max()) == 1.0 and float(maps.min()) == 0.0


def test_normalisers():
    disparity = torch.tensor([2.0, 4.0, 6.0]).view(3, 1, 1, 1)
    assert normalize_disparity(disparity).flatten().tolist() == [0.0, 0.5, 1.0]
    assert normalize_disparity(torch.ones(2, 1, 3, 3)).eq(0).all()  # constant depth: no division by zero
    depth = torch.linspace(0, 100, 101).view(1, 1, 1, 101)
    mapped = normalize_metric_depth(depth).flatten()
    assert mapped[:3].eq(1).all() and mapped[85:].eq(0).all()
    assert float(mapped[50]) == pytest.approx(1 - 48 / 83)


def test_missing_local_dpt_folder(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        DPTDepth(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "\n" not in message and "no-such-model" in message and "does not exist" in message


def test_incomplete_local_dpt_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        DPTDepth(str(tmp_path / "empty"))
    assert "\n" not in str(info.value) and "config.json" in str(info.value)


def test_missing_hub_model_offline():
    with pytest.raises(ModelNotFoundError) as info:
        build_annotator("depth_dpt", model="ccedit-tests/no-such-depth-model")
    message = str(info.value)
    assert "\n" not in message and "'ccedit-tests/no-such-depth-model'" in message
    assert "not found locally" in message and "hf download ccedit-tests/no-such-depth-model" in message


@pytest.mark.parametrize("name", ["midas", "zoe"])
def test_missing_controlnet_aux_depth_weights(tmp_path, name):
    with pytest.raises(ModelNotFoundError) as info:
        build_annotator(name, model=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and ".pt" in message and "hf download" in message
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        build_annotator(name, model="ccedit-tests/no-such-repo")


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="preprocess"):
        DPTDepth(BrightIsNear(), preprocess="resize")
    with pytest.raises(UserError, match="model_type"):
        MidasDepth(model_type="midas_v21_small")
    with pytest.raises(UserError, match="percentile"):
        ZoeDepth(low_percentile=90, high_percentile=10)


def _half(state_dict: dict) -> dict:
    # Half precision halves the file; load_state_dict casts back into the float32 network.
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


@pytest.mark.slow
def test_midas_dpt_hybrid_random_weights_from_folder(tmp_path, check_maps):
    """The full-size DPT-Hybrid (123M parameters) in the layout `MidasDetector.from_pretrained` reads."""
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    torch.manual_seed(0)
    network = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    torch.save(_half(network.state_dict()), tmp_path / "dpt_hybrid-midas-501f0c75.pt")
    annotator = build_annotator("midas", model=str(tmp_path))
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 48, 80, 3), dtype=np.uint8)
    maps = annotator(frames)
    check_maps(maps, frames)
    assert float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0)


@pytest.mark.slow
def test_zoe_random_weights_from_folder(tmp_path, check_maps):
    """The full-size ZoeDepth-N (BEiT-L backbone) in the layout `ZoeDetector.from_pretrained` reads."""
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth as ZoeNetwork
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    torch.manual_seed(0)
    network = ZoeNetwork.build_from_config(get_config("zoedepth", "infer"))
    torch.save({"model": _half(network.state_dict())}, tmp_path / "ZoeD_M12_N.pt")
    del network
    annotator = build_annotator("zoe", model=str(tmp_path))
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)
    check_maps(annotator(frames), frames)
