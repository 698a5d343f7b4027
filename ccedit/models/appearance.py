"""The appearance branch: a ControlNet-style encoder of the edited keyframe's latent (ref §2.4)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn

from .layers import SingleLayerTransformerBlock, zero_module


class SelfAttentionTransformer2D(nn.Module):
    """A spatial transformer without text: GroupNorm, 1x1 `proj_in`, one single-layer block, 1x1 `proj_out`, residual."""

    def __init__(self, channels: int, num_heads: int, norm_num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([SingleLayerTransformerBlock(channels, num_heads, channels // num_heads)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # b (h w) c
        for block in self.transformer_blocks:
            tokens = block(tokens)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))


class AppearanceBlock(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, temb_channels, has_attention, heads, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(
                in_channels=in_channels if j == 0 else out_channels,
                out_channels=out_channels,
                temb_channels=temb_channels,
                groups=groups,
                eps=1e-5,
            )
            for j in range(num_layers)
        )
        self.attentions = (
            nn.ModuleList(SelfAttentionTransformer2D(out_channels, heads, groups) for _ in range(num_layers))
            if has_attention
            else None
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")])
            if downsample
            else None
        )


class AppearanceMidBlock(nn.Module):
    def __init__(self, channels, temb_channels, heads, groups):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb_channels, groups=groups, eps=1e-5)
            for _ in range(2)
        )
        self.attentions = nn.ModuleList([SelfAttentionTransformer2D(channels, heads, groups)])


class AppearanceEncoder(ModelMixin, ConfigMixin):
    r"""Encodes the edited keyframe's VAE latent into residuals for the keyframe's frame of the main UNet.

    The encoder half of an SD-1.5 UNet with a zero 1x1 convolution after every block, like a ControlNet, but
    without its noisy-latent input, without a hint encoder (the latent goes straight into `conv_in`) and without
    text cross-attention; its ResBlocks still see the timestep, so residuals depend on the noise level.

    Args:
        in_channels (`int`): latent channels of the keyframe.
        block_out_channels (`tuple[int]`): channels per level, those of the main UNet.
        layers_per_block (`int`): ResBlocks per level.
        attention_levels (`tuple[bool]`): whether each level has transformers (the middle block always has).
        num_attention_heads (`tuple[int]`): heads per level.
        norm_num_groups (`int`): GroupNorm groups.
        flip_sin_to_cos, freq_shift: the sinusoidal timestep embedding's settings (SD-1.5: cosine first, shift 0).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        num_attention_heads: tuple[int, ...] = (8, 8, 8, 8),
        norm_num_groups: int = 32,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
    ):
        super().__init__()
        channels = list(block_out_channels)
        temb_channels = channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        self.down_blocks = nn.ModuleList()
        self.controlnet_down_blocks = nn.ModuleList([zero_module(nn.Conv2d(channels[0], channels[0], 1))])
        for i, cout in enumerate(channels):
            last = i == len(channels) - 1
            cin = channels[max(i - 1, 0)]
            self.down_blocks.append(
                AppearanceBlock(
                    cin, cout, layers_per_block, temb_channels, attention_levels[i], num_attention_heads[i],
                    norm_num_groups, downsample=not last,
                )
            )
            for _ in range(layers_per_block + (0 if last else 1)):
                self.controlnet_down_blocks.append(zero_module(nn.Conv2d(cout, cout, 1)))
        self.mid_block = AppearanceMidBlock(channels[-1], temb_channels, num_attention_heads[-1], norm_num_groups)
        self.controlnet_mid_block = zero_module(nn.Conv2d(channels[-1], channels[-1], 1))

    def forward(
        self, keyframe_latent: torch.Tensor, timestep: torch.Tensor, scale: float = 1.0
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        r"""Residuals for the keyframe's frame.

        Args:
            keyframe_latent (`torch.Tensor`): the edited keyframe's scaled VAE latent, `(batch, channels, h, w)`.
            timestep (`torch.Tensor`): `(batch,)` or a scalar.
            scale (`float`): multiplies every residual (the appearance scale).

        Returns:
            `(down, mid)`: one residual per encoder block output `(batch, C_i, h_i, w_i)`, and the middle one.
        """
        timestep = torch.as_tensor(timestep, device=keyframe_latent.device)
        timestep = timestep.expand(keyframe_latent.shape[0]) if timestep.ndim == 0 else timestep
        temb = self.time_embedding(self.time_proj(timestep).to(dtype=keyframe_latent.dtype))

        x = self.conv_in(keyframe_latent)
        features = [x]
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                x = resnet(x, temb)
                if block.attentions is not None:
                    x = block.attentions[j](x)
                features.append(x)
            if block.downsamplers is not None:
                x = block.downsamplers[0](x)
                features.append(x)
        x = self.mid_block.resnets[0](x, temb)
        x = self.mid_block.attentions[0](x)
        x = self.mid_block.resnets[1](x, temb)

        down = [conv(feature) * scale for conv, feature in zip(self.controlnet_down_blocks, features, strict=True)]
        return down, self.controlnet_mid_block(x) * scale


def _appearance_key(unet_key: str) -> str | None:
    """The `AppearanceEncoder` name of an image-UNet encoder tensor, or None for tensors it has no place for.

    The appearance transformers are single-layer blocks without text: SD's cross-attention (`attn2`) and the norm
    before it (`norm2`) have no counterpart, and SD's pre-feed-forward `norm3` is the block's `norm2` (ref §5 item 3).
    """
    if not unet_key.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")):
        return None
    if ".attn2." in unet_key or ".transformer_blocks.0.norm2." in unet_key:
        return None
    return unet_key.replace(".transformer_blocks.0.norm3.", ".transformer_blocks.0.norm2.")


def appearance_config_for(unet) -> dict:
    """The `AppearanceEncoder` config for an SD-1.5-shaped diffusers `UNet2DConditionModel`."""
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    heads = cfg.num_attention_heads or cfg.attention_head_dim  # diffusers' SD configs store heads in the latter
    return dict(
        in_channels=cfg.in_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        attention_levels=tuple(t.startswith("CrossAttn") for t in cfg.down_block_types),
        num_attention_heads=tuple([heads] * levels if isinstance(heads, int) else heads),
        norm_num_groups=cfg.norm_num_groups,
        flip_sin_to_cos=cfg.flip_sin_to_cos,
        freq_shift=cfg.freq_shift,
    )


def appearance_encoder_from_unet(unet) -> AppearanceEncoder:
    """A new `AppearanceEncoder` holding a copy of `unet`'s encoder, with zero output convolutions.

    This is how a ControlNet starts from its base model, and how the appearance branch can start from public
    weights (the released CCEdit never shipped its initial one). Every encoder tensor is copied with its shape
    checked; only the zero convolutions (`controlnet_*`) may be left without a source.
    """
    encoder = AppearanceEncoder(**appearance_config_for(unet))
    target = encoder.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        name = _appearance_key(key)
        if name is None:
            continue
        if name not in target or target[name].shape != value.shape:
            got = tuple(target[name].shape) if name in target else "nothing"
            raise ValueError(f"UNet tensor {key} {tuple(value.shape)} has no appearance counterpart (found {got})")
        copied[name] = value
    missing = [k for k in target if k not in copied and not k.startswith("controlnet_")]
    if missing:
        raise ValueError(f"{len(missing)} appearance tensors have no UNet source, e.g. {missing[:3]}")
    encoder.load_state_dict({**target, **copied})
    return encoder.to(unet.device) if unet.dtype == torch.float32 else encoder.to(unet.device, unet.dtype)
