"""AnimateDiff's motion modules as a trident main branch: the openly licensed alternative to CCEdit's temporal layers.

diffusers' `UNetMotionModel` is an SD-1.5 UNet with AnimateDiff's motion modules, and it takes ControlNet-style
residuals into its skips (`down_block_additional_residuals`), so every side branch whose residuals go `into="skips"`
(structure ControlNets, SparseCtrl) plugs in through `BranchResiduals.dense`.
"""

from __future__ import annotations

import logging
import os
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

    Its one learnable role is `temporal`, the motion modules: they attend over all frames, so there is no cross-frame
    attention to train apart. They are saved as the diffusers `MotionAdapter` they came from.

    Args:
        unet (`UNetMotionModel`): the SD-1.5 UNet with motion modules.
        adapter_config (`dict`): the config of the `MotionAdapter` the motion modules came from, to save them as one.
    """

    roles = ("temporal",)

    def __init__(self, unet: UNetMotionModel, adapter_config: dict):
        super().__init__()
        self.unet = unet
        self.adapter_config = dict(adapter_config)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def named_parameters_by_role(self) -> dict[str, dict[str, nn.Parameter]]:
        """`temporal`: the motion modules' parameters, named as in `self.named_parameters()`; the image UNet's
        belong to no role."""
        return {"temporal": {n: p for n, p in self.named_parameters() if ".motion_modules." in n}}

    def frozen_modules(self) -> list[nn.Module]:
        """The image UNet's modules (everything but the motion modules): the frozen part mixed precision may cast."""
        blocks = ("down_blocks", "up_blocks", "mid_block")
        modules = [m for name, m in self.unet.named_children() if name not in blocks]
        for block in (*self.unet.down_blocks, *self.unet.up_blocks, self.unet.mid_block):
            modules += [m for name, m in block.named_children() if name != "motion_modules"]
        return modules

    def motion_adapter(self) -> MotionAdapter:
        """A diffusers `MotionAdapter` holding this branch's motion modules (shared, not copied): what a pipeline
        takes as its temporal layers, and what `save_temporal` writes."""
        with torch.device("meta"):  # every parameter is replaced by the branch's own below
            adapter = MotionAdapter.from_config(self.adapter_config)
        pairs = [*zip(adapter.down_blocks, self.unet.down_blocks), *zip(adapter.up_blocks, self.unet.up_blocks)]
        if hasattr(adapter, "mid_block") and adapter.mid_block is not None:
            pairs.append((adapter.mid_block, self.unet.mid_block))
        for adapter_block, block in pairs:
            adapter_block.motion_modules = block.motion_modules
        left = [n for n, p in adapter.named_parameters() if p.is_meta]
        if left:
            raise ValueError(f"the motion adapter has layers outside its motion modules, which this branch does not "
                             f"keep: {left[:3]}")
        return adapter

    def save_temporal(self, folder: str | os.PathLike) -> None:
        """Write the motion modules to `folder` as a diffusers `MotionAdapter` (config + safetensors)."""
        self.motion_adapter().save_pretrained(folder)

    def load_temporal(self, folder: str | os.PathLike) -> None:
        """Copy the motion modules of the `MotionAdapter` in `folder` into this branch's (in place)."""
        self.unet.load_motion_modules(MotionAdapter.from_pretrained(folder))

    def components(self) -> dict[str, nn.Module]:
        """The `unet` and `temporal` a `CCEditPipeline` takes to build this main branch again, sharing its weights."""
        return {"unet": self.unet, "temporal": self.motion_adapter()}

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

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
    """The main branch over `unet` and `adapter`; a `UNetMotionModel` (which holds the motion modules already, as a
    pipeline rebuilt from `MotionMainBranch.components` gives it) is used as it is."""
    motion = unet if isinstance(unet, UNetMotionModel) else motion_unet(unet, adapter)
    return MotionMainBranch(motion, adapter.config)
