"""A model's networks on the meta device, built from its configs alone: every shape, no weight read or allocated.

The memory model (`ccedit.memory`) traces calls of these networks, so that `ccedit edit --dry-run` and the memory
guard estimate the model the edit will load (a converted folder of any size, the open trident's parts, the built-in
tiny models) rather than a fixed size.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from ..models.geometry import build_network_modules
from ..errors import ModelNotFoundError
from ..hub import cached_model_folder
from .model_folders import HOW_TO_GET
from .tiny import GEOMETRIES, build_text_encoder, build_vae


@dataclass
class NetworkSkeleton:
    """The networks of a pipeline, on the meta device (`controlnets`: one per structure annotator)."""

    unet: nn.Module
    temporal: nn.Module
    controlnets: list[nn.Module]
    appearance: nn.Module | None
    vae: nn.Module
    text_encoder: nn.Module

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.temporal, *self.controlnets, *([self.appearance] if self.appearance else []),
                self.vae, self.text_encoder]

    def to(self, dtype: torch.dtype) -> NetworkSkeleton:
        for module in self.modules():
            nn.Module.to(module, dtype)  # diffusers' own `to` warns about float32 modules meta networks do not have
        return self


def geometry_skeleton(geometry: str, keyframe: bool, num_controlnets: int = 1) -> NetworkSkeleton:
    """A CCEdit model of a named geometry (`ccedit.pipelines.tiny.GEOMETRIES`; `sd15` is the released size), with
    the keyframe model's appearance branch and cross-frame attention when `keyframe`."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}: one of {', '.join(GEOMETRIES)}")
    nets = build_network_modules(GEOMETRIES[geometry], keyframe, device="meta")
    with torch.device("meta"):
        vae = build_vae(geometry)
        text_encoder = build_text_encoder(geometry, vocab_size=49408 if geometry == "sd15" else 514)
    controlnets = [nets["controlnet"], *(copy.deepcopy(nets["controlnet"]) for _ in range(num_controlnets - 1))]
    return NetworkSkeleton(nets["unet"], nets["temporal"], controlnets, nets.get("appearance"), vae, text_encoder)


def from_config(cls, folder: Path) -> nn.Module:
    """A `cls` network from the config in `folder`, on the meta device; a missing or malformed config is one line."""
    try:
        with torch.device("meta"):
            if issubclass(cls, PreTrainedModel):  # transformers: a config object, then the model
                return cls(cls.config_class.from_pretrained(folder))
            return cls.from_config(cls.load_config(folder))
    except (OSError, ValueError, TypeError) as e:  # missing or malformed config.json, or one of another class
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotFoundError(
            f"cannot read the {cls.__name__} config in {folder} ({reason}); {HOW_TO_GET}"
        ) from None


def local_folder(reference: str | None) -> Path | None:
    """`reference` as a local folder (a hub id's cached snapshot included), or None: nothing is fetched."""
    return cached_model_folder(reference) if reference else None


def structure_skeletons(own: nn.Module, controlnets: Sequence[str | None]) -> list[nn.Module]:
    """One ControlNet per entry: the model's own for None, else the named folder's (a copy of the model's own shape
    when that is not a local folder: structure ControlNets share the base's architecture)."""
    from diffusers import ControlNetModel

    nets = []
    for reference in controlnets:
        folder = local_folder(reference)
        nets.append(from_config(ControlNetModel, folder) if folder else copy.deepcopy(own))
    return nets
