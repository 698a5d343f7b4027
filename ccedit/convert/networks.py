"""Build ccedit's network modules for an original geometry and fill them from CCEdit-named weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

from ..models import AppearanceEncoder, CCEditTemporalAdapter, TridentModel, VideoUNet
from .geometry import Geometry
from .trident_keys import MappedState, check_complete, map_trident

# Where the networks sit in a released checkpoint (ref §1).
NETWORK_PREFIX = "model.diffusion_model."
NETWORK_COMPONENTS = ("unet", "temporal", "controlnet", "appearance")


def has_appearance(state: Mapping[str, torch.Tensor], prefix: str = NETWORK_PREFIX) -> bool:
    """Whether the weights hold the keyframe model's appearance branch (TVI2V)."""
    return any(k.startswith(prefix + "controlnet_img.") for k in state)


def build_network_modules(geometry: Geometry, keyframe: bool, device: str | torch.device | None = None) -> dict[str, nn.Module]:
    """Randomly initialised modules for `geometry` (pass `device="meta"` to get shapes without memory)."""
    with torch.device(device or "cpu"):
        modules = {
            "unet": UNet2DConditionModel(**geometry.unet_config()),
            "temporal": CCEditTemporalAdapter(**geometry.temporal_config(cross_frame_attention=keyframe)),
            "controlnet": ControlNetModel(**geometry.controlnet_config()),
        }
        if keyframe:
            modules["appearance"] = AppearanceEncoder(**geometry.appearance_config())
    return modules


def expected_shapes(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, tuple[int, ...]]]:
    return {name: {k: tuple(v.shape) for k, v in m.state_dict().items()} for name, m in modules.items()}


def map_networks(
    state: Mapping[str, torch.Tensor],
    geometry: Geometry,
    *,
    prefix: str = NETWORK_PREFIX,
    source: str = "checkpoint",
) -> tuple[MappedState, dict[str, nn.Module]]:
    """Map every network key under `prefix` onto the ccedit components, checking names and shapes.

    Returns the mapped state dicts (tensors are the source's, not copies) and meta-device modules of the right
    configuration. Raises `UserError` naming unexpected, missing or mis-shaped keys.
    """
    keyframe = has_appearance(state, prefix)
    modules = build_network_modules(geometry, keyframe, device="meta")
    out = map_trident(state, geometry.layout, prefix, appearance=keyframe)
    network_keys = [k for k in state if k.startswith(prefix)]
    check_complete(network_keys, out, expected_shapes(modules), source)
    return out, modules


def load_trident(
    state: Mapping[str, torch.Tensor],
    geometry: Geometry,
    *,
    prefix: str = NETWORK_PREFIX,
    source: str = "checkpoint",
    dtype: torch.dtype = torch.float32,
) -> TridentModel:
    """A `TridentModel` holding the given CCEdit-named network weights, cast to `dtype`."""
    mapped, meta_modules = map_networks(state, geometry, prefix=prefix, source=source)
    keyframe = "appearance" in meta_modules
    modules = build_network_modules(geometry, keyframe)
    for name, module in modules.items():
        module.load_state_dict({k: v.to(dtype) for k, v in mapped.components[name].items()}, strict=True)
        if dtype != torch.float32:  # modules are built in float32; casting to it again only makes diffusers warn
            module.to(dtype)
    main = VideoUNet(modules["unet"], modules["temporal"])
    return TridentModel(main, [modules["controlnet"]], modules.get("appearance")).eval()
