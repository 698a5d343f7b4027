"""AnimateDiff's motion modules as a trident main branch: the openly licensed alternative to CCEdit's temporal layers.

diffusers' `UNetMotionModel` is an SD-1.5 UNet with AnimateDiff's motion modules, and it takes ControlNet-style
residuals into its skips (`down_block_additional_residuals`), so every side branch whose residuals go `into="skips"`
(structure ControlNets, SparseCtrl) plugs in through `BranchResiduals.dense`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from .residuals import BranchResiduals, sum_dense


def motion_unet(unet: UNet2DConditionModel, adapter: MotionAdapter) -> UNetMotionModel:
    """diffusers' `UNetMotionModel` made from `unet` and `adapter`, sharing `unet`'s modules.

    `UNetMotionModel.from_unet2d` copies the 2-D layers; putting `unet`'s own modules back in their place keeps one
    copy of the frozen base in memory, and LoRA layers injected into `unet` later act here too.
    """
    # diffusers warns at every dtype cast of a UNetMotionModel (`from_unet2d` casts too) that modules it must keep
    # in float32 may be cast, though its list of them is empty: nothing for the user to act on.
    casts = logging.getLogger("diffusers.models.modeling_utils")
    level = casts.level
    casts.setLevel(logging.ERROR)
    try:
        motion = UNetMotionModel.from_unet2d(unet, adapter).to(unet.device, unet.dtype)
    finally:
        casts.setLevel(level)
    for name in ("conv_in", "time_proj", "time_embedding", "conv_norm_out", "conv_act", "conv_out"):
        setattr(motion, name, getattr(unet, name))
    pairs = [*zip(motion.down_blocks, unet.down_blocks), *zip(motion.up_blocks, unet.up_blocks),
             (motion.mid_block, unet.mid_block)]
    for motion_block, block in pairs:
        for name in ("resnets", "attentions", "downsamplers", "upsamplers"):
            if getattr(block, name, None) is not None:
                setattr(motion_block, name, getattr(block, name))
    return motion


class MotionMainBranch(nn.Module):
    """A trident main branch over diffusers' `UNetMotionModel` (AnimateDiff).

    Args:
        unet (`UNetMotionModel`): the SD-1.5 UNet with motion modules.
    """

    def __init__(self, unet: UNetMotionModel):
        super().__init__()
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *,
        residuals: Sequence[BranchResiduals] = (),
        anchor_index: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise of `(batch, channels, frames, h, w)` latents; `anchor_index` has no meaning here (the
        motion modules attend over all frames) and is ignored."""
        b, _, f = sample.shape[:3]
        down, mid = sum_dense(residuals, b, f)
        # diffusers' motion UNet takes one text row per frame, as its pipelines pass them
        context = encoder_hidden_states.repeat_interleave(f, dim=0)
        return self.unet(
            sample, timestep, context, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, return_dict=False,
        )[0]


def build_motion_main_branch(unet: UNet2DConditionModel | UNetMotionModel, adapter: MotionAdapter) -> MotionMainBranch:
    return MotionMainBranch(unet if isinstance(unet, UNetMotionModel) else motion_unet(unet, adapter))
