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

from ..convert.networks import build_network_modules
from ..errors import ModelNotFoundError
from ..hub import cached_model_folder
from .loading import HOW_TO_GET, MODEL_NETWORKS, OPEN_TRIDENT_NETWORKS, check_model_folder
from .tiny import GEOMETRIES, build_text_encoder, build_vae, tiny_animatediff_components


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


def _from_config(cls, folder: Path) -> nn.Module:
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


def _local_folder(reference: str | None) -> Path | None:
    """`reference` as a local folder (a hub id's cached snapshot included), or None: nothing is fetched."""
    return cached_model_folder(reference) if reference else None


def _structure(own: nn.Module, controlnets: Sequence[str | None]) -> list[nn.Module]:
    """One ControlNet per entry: the model's own for None, else the named folder's (a copy of the model's own shape
    when that is not a local folder: structure ControlNets share the base's architecture)."""
    nets = []
    for reference in controlnets:
        folder = _local_folder(reference)
        nets.append(_from_config(MODEL_NETWORKS["controlnet"], folder) if folder else copy.deepcopy(own))
    return nets


def model_skeleton(model: str, controlnets: Sequence[str | None] = (None,), parts: dict | None = None
                   ) -> NetworkSkeleton | None:
    """The networks `load_pipeline(model, controlnets=..., parts=...)` would build, on the meta device; None when
    their configs are not on this computer (a hub id that is not in the local cache)."""
    if model == "tiny":
        return geometry_skeleton("tiny", keyframe=True, num_controlnets=len(controlnets))
    if model == "animatediff-tiny":  # tiny random networks: built for real (a fraction of a second), then dropped
        c = {k: v.to("meta") if isinstance(v, nn.Module) else v for k, v in tiny_animatediff_components().items()}
        return NetworkSkeleton(c["unet"], c["temporal"], _structure(c["controlnet"], [None] * len(controlnets)),
                               c["appearance"], c["vae"], c["text_encoder"])
    if model == "animatediff":
        folders = {name: _local_folder((parts or {}).get(name)) for name in ("base", "motion_adapter", "controlnet")}
        if None in folders.values():
            return None
        nets = {name: _from_config(cls, folders[part] / sub if sub else folders[part])
                for name, (cls, part, sub) in OPEN_TRIDENT_NETWORKS.items() if name != "appearance"}
        sparse = _local_folder((parts or {}).get("sparsectrl"))
        appearance = _from_config(OPEN_TRIDENT_NETWORKS["appearance"][0], sparse) if sparse else None
    else:
        folder = _local_folder(model)
        if folder is None:
            return None
        check_model_folder(model, folder)
        nets = {name: _from_config(cls, folder / name) for name, cls in MODEL_NETWORKS.items()
                if name != "appearance"}
        has_appearance = (folder / "appearance").is_dir()
        appearance = _from_config(MODEL_NETWORKS["appearance"], folder / "appearance") if has_appearance else None
    return NetworkSkeleton(nets["unet"], nets["temporal"], _structure(nets["controlnet"], controlnets), appearance,
                           nets["vae"], nets["text_encoder"])
