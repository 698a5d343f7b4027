"""Building blocks of CCEdit's learnable layers: temporal convolutions and norms, and single-layer transformers.

Every temporal layer here works on frames folded into the batch, `(batch * frames, channels, height, width)` in
b-major order, the layout the spatial SD-1.5 layers use. The original release reshaped to `(b h w, c, t)` around
every temporal op; the same arithmetic is done here on views of the frame layout, so the spatial layers and the
temporal ones share one tensor without copies in between.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn


def temporal_group_norm(x: torch.Tensor, num_frames: int, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm over the time axis, one set of statistics per pixel.

    The original applies `nn.GroupNorm` to a `(b h w, c, t)` tensor, so each group's mean and variance pool the
    group's channels and all frames, separately at every pixel (ref §2.1 "Trap"). This computes exactly that on
    the frame layout without moving data.

    Args:
        x (`torch.Tensor`): `(batch * frames, channels, height, width)`.
        num_frames (`int`): frames per sample.
        norm (`nn.GroupNorm`): holds the group count, eps and the per-channel affine parameters.
    """
    bt, c, h, w = x.shape
    g = norm.num_groups
    grouped = x.view(bt // num_frames, num_frames, g, c // g, h, w)  # (b, t, g, c/g, h, w)
    stats_input = grouped.float()  # statistics in float32 so fp16/bf16 inputs do not lose the variance
    var, mean = torch.var_mean(stats_input, dim=(1, 3), keepdim=True, correction=0)
    normed = ((stats_input - mean) * torch.rsqrt(var + norm.eps)).to(x.dtype).view(bt, c, h, w)
    if norm.affine:
        normed = normed * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)
    return normed


class TemporalConv(nn.Module):
    """A 1-D convolution over frames with zero padding at the clip's ends, applied at every pixel.

    The weight keeps the original's Conv1d shape `(out, in, kernel)`, so released weights load unchanged. The
    convolution is computed as one per-frame 1x1 convolution producing all kernel taps at once, then a shifted sum
    over frames; no tensor is transposed.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        # Same default initialisation as nn.Conv1d; CCEdit then zero-initialises these (see `zero_init`).
        reference = nn.Conv1d(in_channels, out_channels, kernel_size)
        with torch.no_grad():
            self.weight.copy_(reference.weight)
            self.bias.copy_(reference.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, _, h, w = x.shape
        k = self.kernel_size
        if k == 1:
            return F.conv2d(x, self.weight[..., None], self.bias)
        # Tap j of frame t reads frame t + j - k//2: compute every tap for every frame in one matmul ...
        taps = F.conv2d(x, self.weight.permute(2, 0, 1).reshape(k * self.out_channels, self.in_channels, 1, 1))
        taps = taps.view(bt // num_frames, num_frames, k, self.out_channels, h, w)  # (b, t, k, c, h, w)
        # ... then add the shifted taps; frames outside the clip contribute zero (the original's zero padding).
        centre = k // 2
        out = taps[:, :, centre] + self.bias.view(1, 1, -1, 1, 1)
        for j in range(k):
            shift = j - centre
            if shift == 0 or abs(shift) >= num_frames:
                continue
            if shift < 0:  # tap reads an earlier frame
                out[:, -shift:] += taps[:, :shift, j]
            else:  # tap reads a later frame
                out[:, :-shift] += taps[:, shift:, j]
        return out.view(bt, self.out_channels, h, w)


class TemporalNormConv(nn.Module):
    """`x + conv_t(dropout(SiLU(temporal_norm(x))))`: the temporal refinement after each spatial convolution."""

    def __init__(self, channels: int, norm_num_groups: int = 32, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv = TemporalConv(channels, channels, 3)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = F.silu(temporal_group_norm(x, num_frames, self.norm))
        return x + self.conv(self.dropout(h), num_frames)


class TokenAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections and a biased output, via `scaled_dot_product_attention`.

    Queries and keys/values come from separate inputs, because CCEdit's single-layer blocks normalise only the
    query side (ref §2.1). Parameter names match diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out.0`).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(n, tokens, heads * d) -> (n, heads, tokens, d)` as a view."""
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on projected `(n, tokens, heads * d)` tensors, followed by the output projection."""
        out = F.scaled_dot_product_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v))
        n, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(n, length, self.num_heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attend(self.to_q(queries), self.to_k(context), self.to_v(context))


class SingleLayerTransformerBlock(nn.Module):
    """CCEdit's single-layer transformer block (temporal, cross-frame and appearance-encoder transformers).

    `x <- x + Attn(q = LN1(x), k = v = context)` with `context = x` by default (the un-normalised tokens), then
    `x <- x + GEGLU-FF(LN2(x))`. Note `norm2` is the pre-feed-forward norm here, unlike SD's three-norm block.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = TokenAttention(dim, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), x if context is None else context)
        return x + self.ff(self.norm2(x))


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero (CCEdit's identity initialisation of new paths) and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module
