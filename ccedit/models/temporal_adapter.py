"""CCEdit's learnable temporal layers for an SD-1.5-shaped UNet, saved and loaded apart from the frozen base.

The adapter mirrors the block tree of a diffusers `UNet2DConditionModel` (`down_blocks.i.resnets.j`, ...), holding
for each spatial layer the temporal layer that follows it. `VideoUNet` walks both trees together. Placement and
arithmetic follow the original pseudo-3D UNet (ref §2.1, §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import SingleLayerTransformerBlock, TemporalConv, TemporalNormConv, temporal_group_norm, zero_module


class TemporalResnet(nn.Module):
    """The temporal layers of one ResBlock: after `conv1`, after `conv2`, and on the skip path if channels change."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.in_layers = TemporalNormConv(out_channels, norm_num_groups, eps=1e-5)
        self.out_layers = TemporalNormConv(out_channels, norm_num_groups, eps=1e-5, dropout=dropout)
        # The original adds a kernel-1 temporal conv to the skip path only where the channel count changes.
        self.skip = TemporalConv(out_channels, out_channels, 1) if in_channels != out_channels else None


class TemporalTransformer(nn.Module):
    """Self-attention along time at every pixel: the T frames at one location form a sequence.

    `x + proj_out(block(proj_in(temporal_norm(x))))`, no positional embedding (ref §2.1, SpatialTransformer3D).
    """

    def __init__(self, channels: int, num_heads: int, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = TemporalConv(channels, channels, 1)
        self.block = SingleLayerTransformerBlock(channels, num_heads, channels // num_heads, dropout)
        self.proj_out = TemporalConv(channels, channels, 1)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // num_frames
        normed = temporal_group_norm(x, num_frames, self.norm)
        # (b t) c h w -> b (h w) t c: a strided view, made contiguous once by the projection's matmul.
        seq = normed.view(b, num_frames, c, h * w).permute(0, 3, 1, 2)
        seq = F.linear(seq, self.proj_in.weight[..., 0], self.proj_in.bias)
        seq = self.block(seq.view(b * h * w, num_frames, c))
        seq = F.linear(seq, self.proj_out.weight[..., 0], self.proj_out.bias).view(b, h * w, num_frames, c)
        # The residual add reads the sequence back in frame layout and writes x's layout: no separate copy.
        return (x.view(b, num_frames, c, h * w) + seq.permute(0, 2, 3, 1)).view(bt, c, h, w)


def prepend_reference(tokens: torch.Tensor, num_frames: int, reference_index: int | torch.Tensor) -> torch.Tensor:
    """`(b t) n d -> (b t) (2 n) d`: every frame's tokens preceded by its sample's reference frame's.

    `reference_index` is one frame for every sample, or a `(b,)` tensor with each sample's own.
    """
    bt, n, d = tokens.shape
    framed = tokens.view(bt // num_frames, num_frames, n, d)
    if isinstance(reference_index, torch.Tensor) and reference_index.ndim == 1:
        samples = torch.arange(framed.shape[0], device=framed.device)
        reference = framed[samples, reference_index.to(framed.device)][:, None].expand_as(framed)
    else:
        reference_index = int(reference_index)
        reference = framed[:, reference_index : reference_index + 1].expand_as(framed)
    return torch.cat([reference, framed], dim=2).flatten(0, 1)


class CrossFrameAttention(nn.Module):
    """Attention from every frame to [reference frame ; itself] ("cfca", TVI2V only; ref §2.2).

    Per frame: `norm` -> 1x1 `proj_in` gives tokens; keys and values are the reference frame's tokens followed by
    the frame's own (2·H·W tokens); a single-layer block; zero-initialised 1x1 `proj_out`; residual.
    """

    def __init__(self, channels: int, num_heads: int, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.block = SingleLayerTransformerBlock(channels, num_heads, channels // num_heads, dropout)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, num_frames: int, reference_index: int | torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        hw = h * w
        block, attn = self.block, self.block.attn1
        # (b t) c h w -> (b t) (h w) c through the 1x1 `proj_in` as a dense layer (faster than a 1x1 convolution or
        # a batched matmul over the transposed view; on the CPU, oneDNN's under `model.cpu_tuning`).
        tokens = F.linear(self.norm(x).view(bt, c, hw).transpose(1, 2), self.proj_in.weight[:, :, 0, 0],
                          self.proj_in.bias)
        # Project keys and values once per frame and share the reference frame's, instead of projecting the
        # concatenated 2·H·W tokens of every frame. The concatenation is this layer's one copy: attention needs
        # each frame's [reference ; own] keys as one block.
        k, v = (prepend_reference(z, num_frames, reference_index) for z in attn.key_value(tokens))
        tokens = tokens + attn.attend(attn.to_q(block.norm1(tokens)), k, v)
        tokens = block.feed_forward(tokens)
        out = F.linear(tokens, self.proj_out.weight[:, :, 0, 0], self.proj_out.bias)  # (b t) (h w) c
        return (x.view(bt, c, hw) + out.transpose(1, 2)).view(bt, c, h, w)


class TemporalAttention(nn.Module):
    """The layers that follow one spatial transformer: temporal self-attention, then optionally cross-frame.

    With `gradient_checkpointing` (set by `CCEditTemporalAdapter.enable_gradient_checkpointing()`) each attention
    layer recomputes its activations in the backward pass: these are the temporal layers' largest.
    """

    def __init__(self, channels: int, num_heads: int, norm_num_groups: int, cross_frame: bool, dropout: float):
        super().__init__()
        self.temporal = TemporalTransformer(channels, num_heads, norm_num_groups, dropout)
        self.cross_frame = CrossFrameAttention(channels, num_heads, norm_num_groups, dropout) if cross_frame else None
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, num_frames: int, reference_index: int | torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            x = self._gradient_checkpointing_func(self.temporal, x, num_frames)
            if self.cross_frame is not None:
                x = self._gradient_checkpointing_func(self.cross_frame, x, num_frames, reference_index)
            return x
        x = self.temporal(x, num_frames)
        if self.cross_frame is not None:
            x = self.cross_frame(x, num_frames, reference_index)
        return x


class TemporalBlock(nn.Module):
    """Temporal layers of one down/up block: per ResBlock, per transformer, and after the resampler."""

    def __init__(
        self,
        resnet_channels: list[tuple[int, int]],
        has_attention: bool,
        num_heads: int,
        resampler_channels: int | None,
        norm_num_groups: int,
        cross_frame: bool,
        dropout: float,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            TemporalResnet(cin, cout, norm_num_groups, dropout) for cin, cout in resnet_channels
        )
        self.attentions = (
            nn.ModuleList(
                TemporalAttention(cout, num_heads, norm_num_groups, cross_frame, dropout)
                for _, cout in resnet_channels
            )
            if has_attention
            else None
        )
        self.resampler = TemporalConv(resampler_channels, resampler_channels, 3) if resampler_channels else None


class CCEditTemporalAdapter(ModelMixin, ConfigMixin):
    r"""All learnable temporal layers that turn an SD-1.5-shaped image UNet into CCEdit's video UNet.

    Saved and loaded on its own (`save_pretrained`/`from_pretrained`), so the frozen base UNet can be swapped for
    any compatible SD-1.5 checkpoint or personalised model.

    Args:
        block_out_channels (`tuple[int]`): channels per UNet level, as in the base UNet's config.
        layers_per_block (`int`): ResBlocks per encoder level (decoder levels have one more).
        attention_levels (`tuple[bool]`): whether each level has spatial transformers (the middle block always has).
        num_attention_heads (`tuple[int]`): heads per level; temporal attention uses the spatial layer's heads.
        out_channels (`int`): latent channels of the UNet output (its final temporal conv works on them).
        norm_num_groups (`int`): GroupNorm groups of the temporal norms.
        cross_frame_attention (`bool`): add the cross-frame attention of the keyframe model (TVI2V).
        dropout (`float`): dropout inside temporal layers (0 in CCEdit).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        num_attention_heads: tuple[int, ...] = (8, 8, 8, 8),
        out_channels: int = 4,
        norm_num_groups: int = 32,
        cross_frame_attention: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = list(block_out_channels)
        levels = len(channels)
        heads = list(num_attention_heads)
        if not (len(attention_levels) == len(heads) == levels):
            raise ValueError(
                "`attention_levels` and `num_attention_heads` need one entry per level of `block_out_channels` "
                f"({levels}), got {len(attention_levels)} and {len(heads)}"
            )
        common = dict(norm_num_groups=norm_num_groups, cross_frame=cross_frame_attention, dropout=dropout)

        self.conv_in = TemporalConv(channels[0], channels[0], 3)
        self.down_blocks = nn.ModuleList()
        for i, cout in enumerate(channels):
            cin = channels[max(i - 1, 0)]
            resnets = [(cin if j == 0 else cout, cout) for j in range(layers_per_block)]
            last = i == levels - 1
            self.down_blocks.append(
                TemporalBlock(resnets, attention_levels[i], heads[i], None if last else cout, **common)
            )
        self.mid_block = TemporalBlock([(channels[-1],) * 2] * 2, True, heads[-1], None, **common)
        # Only the first ResBlock's output carries a transformer in the mid block.
        self.mid_block.attentions = self.mid_block.attentions[:1]

        self.up_blocks = nn.ModuleList()
        reversed_channels = channels[::-1]
        prev = reversed_channels[0]
        for i, cout in enumerate(reversed_channels):
            skip_channels = [reversed_channels[min(i + 1, levels - 1)]] + [cout] * layers_per_block
            skip_channels = skip_channels[::-1]  # skips pop from the end of the encoder's outputs
            resnets = []
            for j in range(layers_per_block + 1):
                resnets.append(((prev if j == 0 else cout) + skip_channels[j], cout))
            prev = cout
            last = i == levels - 1
            level = levels - 1 - i
            self.up_blocks.append(
                TemporalBlock(resnets, attention_levels[level], heads[level], None if last else cout, **common)
            )
        self.conv_out = TemporalConv(out_channels, out_channels, 3)

    def zero_init(self) -> "CCEditTemporalAdapter":
        """CCEdit's initialisation: every path that ends in a zero tensor is an identity before training (ref §2.1)."""
        zero_module(self.conv_in)
        zero_module(self.conv_out)
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            for res in block.resnets:
                zero_module(res.in_layers.conv)
                zero_module(res.out_layers.conv)
                if res.skip is not None:
                    zero_module(res.skip)
            for attn in block.attentions or []:
                zero_module(attn.temporal.proj_in)
                zero_module(attn.temporal.proj_out)
                if attn.cross_frame is not None:
                    zero_module(attn.cross_frame.proj_out)
            if block.resampler is not None:
                zero_module(block.resampler)
        return self

    def output_refinement(self, eps: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`eps + conv_t(SiLU(eps))` on the UNet's per-frame output (ref §2.1 "Output")."""
        return eps + self.conv_out(F.silu(eps), num_frames)
