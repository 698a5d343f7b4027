"""The structure branch as a side branch: per-frame ControlNets, each fed its own maps (or their hint encodings) of
every frame, their residuals summed into the main branch's skips.

`ControlNetStructure` is the adapter (`side_branches.SideBranch`); `TridentModel` holds the ControlNets (their
parameters and file layout stay its own) and asks it for the structure's contribution to each call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .residuals import BranchResiduals
from .side_branches import BranchCall, SideBranch

# One instance for every call: a compiled ControlNet checks which module it calls, and a new one would recompile it.
_ENCODED_HINT = nn.Identity()


@contextlib.contextmanager
def _hint_encoding_given(net: nn.Module):
    """Let `net` take an encoded hint: diffusers' `ControlNetModel.forward` always runs its hint encoder on
    `controlnet_cond`, so for the call the encoder is an identity and the encoding (`encode`) goes in."""
    encoder = net.controlnet_cond_embedding
    net.controlnet_cond_embedding = _ENCODED_HINT
    try:
        yield
    finally:
        net.controlnet_cond_embedding = encoder


@dataclass(frozen=True)
class StructureCondition:
    """The structure branch's condition of one call, as callers give it.

    Args:
        maps: per ControlNet, maps `(batch, 3, frames, H, W)` in `[0, 1]` (one tensor for a single ControlNet).
        hints: instead of `maps`, their encodings (`ControlNetStructure.encode`), `(batch, C, frames, h, w)` each.
        scale: one scale for every ControlNet, or one each; 0 skips that ControlNet.
    """

    maps: Sequence[torch.Tensor] | torch.Tensor | None = None
    hints: Sequence[torch.Tensor] | None = None
    scale: Sequence[float] | float = 1.0

    def __post_init__(self):
        if self.maps is not None and self.hints is not None:
            raise ValueError("pass either `structure_maps` or their `structure_hints`, not both")

    @property
    def encoded(self) -> bool:
        return self.hints is not None

    def per_net(self) -> tuple[list[torch.Tensor], list[float]]:
        """The maps (or hints) and the scale of each ControlNet given, as lists of the same length."""
        maps = self.hints if self.encoded else self.maps
        maps = [maps] if isinstance(maps, torch.Tensor) else list(maps or [])
        one_scale = isinstance(self.scale, (int, float))
        scales = [self.scale] * len(maps) if one_scale else list(self.scale)
        if len(scales) != len(maps):
            raise ValueError(f"got {len(scales)} structure scales for {len(maps)} structure maps")
        return maps, scales


class ControlNetStructure(SideBranch):
    """ControlNets on every frame: `(sample, timestep, text, StructureCondition)` -> their summed residuals for every
    frame, into the skips (none without maps, or where every scale is 0).

    Args:
        nets (`Sequence[ControlNetModel]`): the ControlNets, in the order their maps are given.
    """

    def __init__(self, nets: Sequence[nn.Module]):
        self.nets = list(nets)

    @property
    def hints_can_be_encoded(self) -> bool:
        """Whether `encode` serves every ControlNet (forward flips a BGR one's input after the point where an
        encoding would go in)."""
        return all(net.config.controlnet_conditioning_channel_order == "rgb" for net in self.nets)

    def encode(self, structure_maps: Sequence[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
        """Each ControlNet's hint encoding of its maps: `(b, 3, t, H, W)` -> `(b, C, t, h, w)` at latent size."""
        if not self.hints_can_be_encoded:
            raise ValueError("a ControlNet with BGR channel order flips its input inside forward: pass its maps")
        hints = []
        for net, maps in zip(self.nets, structure_maps, strict=True):
            encoded = net.controlnet_cond_embedding(rearrange(maps, "b c t h w -> (b t) c h w").to(dtype))
            hints.append(rearrange(encoded, "(b t) c h w -> b c t h w", b=maps.shape[0]))
        return hints

    def contributions(self, call: BranchCall, condition: StructureCondition) -> list[BranchResiduals]:
        maps, scales = condition.per_net()
        if maps and len(maps) != len(self.nets):
            raise ValueError(f"got {len(maps)} structure maps for {len(self.nets)} ControlNets")
        if not maps:
            return []
        down, mid = self.residuals(call.sample, call.timestep, call.text, maps, scales, condition.encoded)
        return [] if down is None else [BranchResiduals(down, mid, frames=None, into="skips")]

    def residuals(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
        structure_maps: Sequence[torch.Tensor], structure_scales: Sequence[float], encoded: bool = False,
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        """Sum of the ControlNets' residuals for every frame, `(batch * frames, C, h, w)`; `(None, None)` if unused.

        With `encoded`, `structure_maps` are hint encodings from `encode`, not maps.
        """
        b, f = sample.shape[0], sample.shape[2]
        frames = rearrange(sample, "b c t h w -> (b t) c h w")
        timestep = torch.as_tensor(timestep, device=sample.device)
        frame_timesteps = (timestep.expand(b) if timestep.ndim == 0 else timestep).repeat_interleave(f)
        context = encoder_hidden_states.repeat_interleave(f, dim=0)
        down_total, mid_total = None, None
        for net, maps, scale in zip(self.nets, structure_maps, structure_scales, strict=True):
            if scale == 0:
                continue  # a zero scale contributes nothing: skip the whole ControlNet pass
            hint = rearrange(maps, "b c t h w -> (b t) c h w")
            with _hint_encoding_given(net) if encoded else contextlib.nullcontext():
                down, mid = net(
                    frames, frame_timesteps, context, controlnet_cond=hint.to(frames.dtype),
                    conditioning_scale=scale, return_dict=False,
                )
            if down_total is None:
                down_total, mid_total = list(down), mid
            else:
                down_total = [a + r for a, r in zip(down_total, down)]
                mid_total = mid_total + mid
        return down_total, mid_total
