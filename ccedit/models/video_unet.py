"""The main branch: a frozen diffusers `UNet2DConditionModel` made temporal by a `CCEditTemporalAdapter`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from einops import rearrange
from diffusers import UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .centre import centre_frame
from .residuals import BranchResiduals
from .temporal_adapter import CCEditTemporalAdapter, TemporalAttention, TemporalResnet

SUPPORTED_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
SUPPORTED_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")


def adapter_config_for(unet: UNet2DConditionModel, cross_frame_attention: bool = False) -> dict:
    """The `CCEditTemporalAdapter` config that fits `unet` (SD-1.5-shaped: conv resampling, no class embeddings)."""
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    heads = cfg.num_attention_heads or cfg.attention_head_dim  # diffusers' SD configs store heads in the latter
    heads = [heads] * levels if isinstance(heads, int) else list(heads)
    layers = cfg.layers_per_block
    if not isinstance(layers, int):
        raise ValueError(f"only an integer `layers_per_block` is supported, got {layers}")
    return dict(
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=layers,
        attention_levels=tuple(t.startswith("CrossAttn") for t in cfg.down_block_types),
        num_attention_heads=tuple(heads),
        out_channels=cfg.out_channels,
        norm_num_groups=cfg.norm_num_groups,
        cross_frame_attention=cross_frame_attention,
    )


def check_compatible(unet: UNet2DConditionModel, temporal: CCEditTemporalAdapter) -> None:
    """Raise a `ValueError` naming the mismatch when `temporal` was not made for a UNet shaped like `unet`."""
    cfg = unet.config
    bad = [t for t in cfg.down_block_types if t not in SUPPORTED_DOWN_BLOCKS]
    bad += [t for t in cfg.up_block_types if t not in SUPPORTED_UP_BLOCKS]
    if bad or cfg.mid_block_type != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"the base UNet must be SD-1.5-shaped; unsupported block types: {bad or cfg.mid_block_type}")
    expected = adapter_config_for(unet, temporal.config.cross_frame_attention)
    for key, value in expected.items():
        got = getattr(temporal.config, key)
        got = tuple(got) if isinstance(got, list) else got
        if got != value:
            raise ValueError(f"temporal adapter does not fit the base UNet: `{key}` is {got}, the UNet needs {value}")


class VideoUNet(ModelMixin):
    r"""CCEdit's pseudo-3D main branch (ref §2.1): per-frame SD-1.5 layers, each followed by its temporal layer.

    A diffusers `ModelMixin` for its training API (`enable_gradient_checkpointing`, `num_parameters`, ...), but
    not saved as a whole: the base UNet is named by its own folder or hub id, and `save_temporal` writes only the
    learnable layers, in the `temporal/` sub-folder a ccedit model folder holds (as diffusers' motion UNet does with
    `save_motion_modules`).

    Args:
        unet (`UNet2DConditionModel`): the frozen image UNet (any SD-1.5 checkpoint or personalised model).
        temporal (`CCEditTemporalAdapter`): the learnable temporal layers made for that UNet's shape.
    """

    _supports_gradient_checkpointing = True
    roles = ("temporal", "cross_frame")  # the learnable roles (`named_parameters_by_role`)

    def __init__(self, unet: UNet2DConditionModel, temporal: CCEditTemporalAdapter):
        super().__init__()
        check_compatible(unet, temporal)
        self.unet = unet
        self.temporal = temporal
        self.gradient_checkpointing = False

    @classmethod
    def from_unet2d(
        cls,
        unet: UNet2DConditionModel,
        temporal: CCEditTemporalAdapter | None = None,
        cross_frame_attention: bool = False,
    ) -> "VideoUNet":
        """The main branch on `unet`: with `temporal`, or new temporal layers in CCEdit's identity initialisation.

        Args:
            unet (`UNet2DConditionModel`): an SD-1.5-shaped image UNet.
            temporal (`CCEditTemporalAdapter`, *optional*): trained temporal layers; new zero-initialised ones
                (ref §2.1: the video UNet starts as the image UNet run per frame) when not given.
            cross_frame_attention (`bool`): give new temporal layers the keyframe model's cross-frame attention.
        """
        if temporal is None:
            config = adapter_config_for(unet, cross_frame_attention)
            temporal = CCEditTemporalAdapter(**config).zero_init().to(unet.device)
            if unet.dtype != torch.float32:
                temporal = temporal.to(unet.dtype)
        return cls(unet, temporal)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def freeze_unet2d_params(self) -> None:
        """Freeze the image UNet; the temporal layers stay trainable."""
        self.unet.requires_grad_(False)
        self.temporal.requires_grad_(True)

    def named_parameters_by_role(self) -> dict[str, dict[str, nn.Parameter]]:
        """The learnable parameters by role: `temporal` (temporal layers) and `cross_frame` (cross-frame attention).

        Names are those of `self.named_parameters()`; the image UNet's parameters belong to no role.
        """
        roles: dict[str, dict[str, nn.Parameter]] = {role: {} for role in self.roles}
        for name, param in self.temporal.named_parameters(prefix="temporal"):
            roles["cross_frame" if ".cross_frame." in name else "temporal"][name] = param
        return roles

    def frozen_modules(self) -> list[nn.Module]:
        """The image UNet: the frozen part mixed precision may cast."""
        return [self.unet]

    def save_temporal(self, folder: str | os.PathLike, **kwargs) -> None:
        """Write the temporal layers to `folder` (config + safetensors), loadable as `CCEditTemporalAdapter`."""
        self.temporal.save_pretrained(Path(folder), **kwargs)

    def load_temporal(self, folder: str | os.PathLike) -> None:
        """Copy the temporal layers saved in `folder` (`save_temporal`) into this branch's (in place)."""
        self.temporal.load_state_dict(CCEditTemporalAdapter.from_pretrained(folder).state_dict())

    def components(self) -> dict[str, nn.Module]:
        """The `unet` and `temporal` a `CCEditPipeline` takes to build this main branch again, sharing its weights."""
        return {"unet": self.unet, "temporal": self.temporal}

    def save_pretrained(self, *args, **kwargs):
        raise NotImplementedError(
            "VideoUNet is not saved whole: save the base UNet and `save_temporal` (the learnable layers) apart"
        )

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func: Callable | None = None) -> None:
        # Checkpoint whole (spatial layer + temporal layer) units here; the switches of the modules inside are left
        # as they are, so that no layer is recomputed twice in one backward pass.
        self.gradient_checkpointing = enable
        if gradient_checkpointing_func is not None:
            self._gradient_checkpointing_func = gradient_checkpointing_func

    def _run(self, fn: Callable, *args) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            # diffusers' checkpointing functions call `fn.__call__(*args)`, which a bound method also has.
            return self._gradient_checkpointing_func(fn, *args)
        return fn(*args)

    def _resnet(self, resnet: nn.Module, temporal: TemporalResnet, x, temb, num_frames: int) -> torch.Tensor:
        """A diffusers `ResnetBlock2D` (SD-1.5 settings) with CCEdit's temporal layers after each convolution.

        `temb` is `(batch, d)`, one row per sample: its projection is broadcast over the sample's frames.
        """
        h = resnet.conv1(resnet.nonlinearity(resnet.norm1(x)))
        h = temporal.in_layers(h, num_frames)
        bt, c, height, width = h.shape
        time = resnet.time_emb_proj(resnet.nonlinearity(temb))[:, None, :, None, None]  # (b, 1, c, 1, 1)
        h = (h.view(bt // num_frames, num_frames, c, height, width) + time).view(bt, c, height, width)
        h = resnet.conv2(resnet.dropout(resnet.nonlinearity(resnet.norm2(h))))
        h = temporal.out_layers(h, num_frames)
        skip = x if resnet.conv_shortcut is None else resnet.conv_shortcut(x)
        if temporal.skip is not None:
            skip = skip + temporal.skip(skip, num_frames)
        return (skip + h) / resnet.output_scale_factor

    def _attention(
        self, attn: nn.Module, temporal: TemporalAttention, x, context, num_frames: int,
        anchor_index: int | torch.Tensor,
    ) -> torch.Tensor:
        """A diffusers `Transformer2DModel` per frame, then temporal (and cross-frame) attention."""
        x = attn(x, encoder_hidden_states=context, return_dict=False)[0]
        return temporal(x, num_frames, anchor_index)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *,
        residuals: Sequence[BranchResiduals] = (),
        anchor_index: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Predict the noise of a video latent.

        Args:
            sample (`torch.Tensor`): noisy latents `(batch, channels, frames, height, width)`.
            timestep (`torch.Tensor`): `(batch,)` or a scalar.
            encoder_hidden_states (`torch.Tensor`): text embeddings `(batch, tokens, dim)`, shared by all frames.
            residuals (`list[BranchResiduals]`): the side branches' residuals (`ccedit.models.residuals`): those
                `into="stream"` are added to the encoder's outputs before they are stored (CCEdit's appearance,
                ref §2.4), those `into="skips"` to the stored skips (ControlNets, ref §2.3); both to the middle
                output, stream first, as the original adds appearance before structure.
            anchor_index (`int` or `torch.Tensor`, *optional*): the frame every frame attends to in cross-frame
                attention, one for all samples or a `(batch,)` tensor; defaults to the centre frame `frames // 2`
                (the original's anchor, where its keyframe sits).

        Returns:
            `torch.Tensor`: predicted noise, `(batch, channels, frames, height, width)`.
        """
        unet, temporal = self.unet, self.temporal
        b, c, f, h, w = sample.shape
        if anchor_index is None:
            anchor_index = centre_frame(f)

        # 1. Time embedding once per sample, shared by its frames.
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.expand(b) if timestep.ndim == 0 else timestep
        temb = unet.time_embedding(unet.time_proj(timestep).to(dtype=sample.dtype))  # b d, broadcast over frames
        # The per-frame spatial transformers need one text row per frame; the temporal layers never read it.
        context = encoder_hidden_states.repeat_interleave(f, dim=0)  # (b t) l d

        # 2. Fold frames into the batch: b c t h w -> (b t) c h w.
        x = rearrange(sample, "b c t h w -> (b t) c h w")

        stream = [r for r in residuals if r.into == "stream"]
        into_skips = [r for r in residuals if r.into == "skips"]

        # 3. Encoder.
        x, skips = self._encoder(x, temb, context, f, anchor_index, stream)

        # 4. Middle block, then its residuals: the stream's (appearance) before the skips' (structure), as in the
        # original.
        mid, tmid = unet.mid_block, temporal.mid_block
        x = self._run(self._resnet, mid.resnets[0], tmid.resnets[0], x, temb, f)
        x = self._run(self._attention, mid.attentions[0], tmid.attentions[0], x, context, f, anchor_index)
        x = self._run(self._resnet, mid.resnets[1], tmid.resnets[1], x, temb, f)
        for r in (*stream, *into_skips):
            x = r.add(x, r.mid, f)
        for r in into_skips:
            skips = [r.add(skip, residual, f) for skip, residual in zip(skips, r.down, strict=True)]

        # 5. Decoder: skips pop from the end.
        x = self._decoder(x, skips, temb, context, f, anchor_index)

        # 6. Per-frame output head, then the temporal refinement of the noise prediction.
        x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
        x = temporal.output_refinement(x, f)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)

    def _encoder(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, f: int, anchor_index,
                 stream: Sequence[BranchResiduals]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder on frames `(b t) c h w`: its output and the skips it stores, each with the stream's
        residuals (the appearance branch's) added before it is stored."""
        unet, temporal = self.unet, self.temporal
        skips: list[torch.Tensor] = []

        def store(hidden: torch.Tensor) -> torch.Tensor:
            for r in stream:
                hidden = r.add(hidden, r.down[len(skips)], f)
            skips.append(hidden)
            return hidden

        x = unet.conv_in(x)
        x = store(temporal.conv_in(x, f) + x)
        for block, tblock in zip(unet.down_blocks, temporal.down_blocks):
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                x = self._run(self._resnet, resnet, tblock.resnets[j], x, temb, f)
                if attentions is not None:
                    x = self._run(self._attention, attentions[j], tblock.attentions[j], x, context, f, anchor_index)
                x = store(x)
            if block.downsamplers is not None:
                x = block.downsamplers[0](x)
                x = store(x + tblock.resampler(x, f))
        return x, skips

    def _decoder(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, context: torch.Tensor, f: int,
                 anchor_index) -> torch.Tensor:
        """The decoder on frames `(b t) c h w`, taking the skips from the end (it empties `skips`)."""
        for block, tblock in zip(self.unet.up_blocks, self.temporal.up_blocks):
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                x = torch.cat([x, skips.pop()], dim=1)
                x = self._run(self._resnet, resnet, tblock.resnets[j], x, temb, f)
                if attentions is not None:
                    x = self._run(self._attention, attentions[j], tblock.attentions[j], x, context, f, anchor_index)
            if block.upsamplers is not None:
                # Upsample to the next skip's size so odd latent sizes round-trip.
                x = block.upsamplers[0](x, output_size=skips[-1].shape[-2:])
                x = x + tblock.resampler(x, f)
        return x

