"""Fill ccedit's network modules of an original geometry (`models.geometry`) from CCEdit-named weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import TridentModel, VideoUNet
from ..models.geometry import Geometry, build_network_modules
from .trident_keys import MappedState, check_complete, map_trident, unet_layout

# Where the networks sit in a released checkpoint (ref §1).
NETWORK_PREFIX = "model.diffusion_model."
NETWORK_COMPONENTS = ("unet", "temporal", "controlnet", "appearance")


def has_appearance(state: Mapping[str, torch.Tensor], prefix: str = NETWORK_PREFIX) -> bool:
    """Whether the weights hold the keyframe model's appearance branch (TVI2V)."""
    return any(k.startswith(prefix + "controlnet_img.") for k in state)


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
    out = map_trident(state, unet_layout(geometry), prefix, appearance=keyframe)
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
