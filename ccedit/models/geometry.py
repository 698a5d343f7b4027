"""The trident's geometry (the original network's ldm constructor arguments), the configs of its diffusers modules,
and randomly initialised modules of a geometry (`build_network_modules`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

from ..errors import UserError
from .appearance import AppearanceEncoder
from .temporal_adapter import CCEditTemporalAdapter

# The released CCEdit networks: SD-1.5's UNet (ref §2.1).
SD15_GEOMETRY = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attention_resolutions": [4, 2, 1],
    "num_heads": 8,
    "context_dim": 768,
    "hint_channels": 3,
}


@dataclass
class Geometry:
    """The ldm constructor arguments that fix every shape of the trident."""

    model_channels: int
    channel_mult: list[int]
    num_res_blocks: int
    attention_resolutions: list[int]
    num_heads: int
    context_dim: int
    in_channels: int = 4
    out_channels: int = 4
    hint_channels: int = 3

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as e:
            raise UserError(f"geometry is incomplete: {e}; it needs {', '.join(cls.__dataclass_fields__)}") from None

    @property
    def block_out_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        # ldm puts transformers at the levels whose downsampling factor 2**i is listed.
        return tuple(2**i in self.attention_resolutions for i in range(len(self.channel_mult)))

    def unet_config(self) -> dict:
        """`UNet2DConditionModel` config (diffusers stores the head count in `attention_head_dim`)."""
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in self.attention_levels]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.attention_levels)]
        return dict(
            sample_size=64,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.num_res_blocks,
            cross_attention_dim=self.context_dim,
            attention_head_dim=self.num_heads,
            norm_num_groups=32,
        )

    def controlnet_config(self) -> dict:
        cfg = self.unet_config()
        for key in ("sample_size", "out_channels", "up_block_types"):
            cfg.pop(key)
        cfg["conditioning_channels"] = self.hint_channels
        return cfg

    def temporal_config(self, cross_frame_attention: bool) -> dict:
        levels = len(self.channel_mult)
        return dict(
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.num_res_blocks,
            attention_levels=self.attention_levels,
            num_attention_heads=(self.num_heads,) * levels,
            out_channels=self.out_channels,
            cross_frame_attention=cross_frame_attention,
        )

    def appearance_config(self) -> dict:
        levels = len(self.channel_mult)
        return dict(
            in_channels=self.in_channels,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.num_res_blocks,
            attention_levels=self.attention_levels,
            num_attention_heads=(self.num_heads,) * levels,
        )


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
