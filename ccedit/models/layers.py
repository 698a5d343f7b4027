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
    grouped = x.view(bt // num_frames, num_frames, g, c // g, h * w)  # (b, t, g, c/g, hw)
    # Statistics in at least float32, so fp16/bf16 inputs do not lose the variance (and float64 stays float64).
    stats_input = grouped.to(torch.promote_types(grouped.dtype, torch.float32))
    # Two-pass mean and variance, each as two one-axis means: one reduction over the non-adjacent frame and
    # channel axes (`var_mean(dim=(1, 3))`) runs some 20x slower on CPU than these, whose inner axis is contiguous.
    mean = stats_input.mean(3, keepdim=True).mean(1, keepdim=True)  # (b, 1, g, 1, hw)
    centred = stats_input - mean
    rstd = centred.square().mean(3, keepdim=True).mean(1, keepdim=True).add_(norm.eps).rsqrt_()
    if norm.affine:
        # One pass over x for normalisation and affine, as nn.GroupNorm's own kernel does it: the per-pixel
        # scale rstd * weight is only 1/frames the size of x.
        scale = rstd * norm.weight.view(1, 1, g, c // g, 1).to(rstd.dtype)
        normed = torch.addcmul(norm.bias.view(1, 1, g, c // g, 1).to(rstd.dtype), centred, scale)
    else:
        normed = centred * rstd
    return normed.to(x.dtype).view(bt, c, h, w)


class TemporalConv(nn.Module):
    """A 1-D convolution over frames with zero padding at the clip's ends, applied at every pixel.

    The weight keeps the original's Conv1d shape `(out, in, kernel)`, so released weights load unchanged. It runs
    as a `(kernel, 1, 1)` 3-D convolution on a `(b, c, t, h, w)` view of the frame layout: one call, no tap
    tensor, and the kernel's own blocking reaches GEMM speed where a per-frame 1x1 convolution producing all taps
    at once does not (3x slower at 128 channels and 32x32).
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

    def forward(self, x: torch.Tensor, num_frames: int, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`conv_t(x)`, or `residual + conv_t(x)` when `residual` is given (added while returning to the frame
        layout, which saves a copy). All tensors are `(batch * frames, channels, height, width)`."""
        bt, _, h, w = x.shape
        if self.kernel_size == 1:
            out = F.conv2d(x, self.weight[..., None], self.bias)
            return out if residual is None else residual + out
        b = bt // num_frames
        video = x.view(b, num_frames, self.in_channels, h, w).transpose(1, 2)  # (b, c, t, h, w) view
        out = F.conv3d(video, self.weight[..., None, None], self.bias, padding=(self.kernel_size // 2, 0, 0))
        out = out.transpose(1, 2)  # (b, t, c, h, w) view of the (b, c, t, h, w) result
        if residual is None:
            return out.reshape(bt, self.out_channels, h, w)
        return (residual.view(b, num_frames, self.out_channels, h, w) + out).view(bt, self.out_channels, h, w)


class TemporalNormConv(nn.Module):
    """`x + conv_t(dropout(SiLU(temporal_norm(x))))`: the temporal refinement after each spatial convolution."""

    def __init__(self, channels: int, norm_num_groups: int = 32, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv = TemporalConv(channels, channels, 3)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        # In place: the norm's output is a fresh tensor only this layer sees.
        h = F.silu(temporal_group_norm(x, num_frames, self.norm), inplace=True)
        return self.conv(self.dropout(h), num_frames, residual=x)


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

    def key_value(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(to_k(context), to_v(context))` from one matmul, as views of its `(..., 2 * heads * d)` output.

        At 128 channels one projection twice as wide runs 1.7x as fast on CPU as two narrow ones (and no slower at
        wider layers); attention reads the strided halves without copying them. Projections that are not plain
        `nn.Linear` (e.g. wrapped by an adapter library) are called as modules instead.
        """
        if type(self.to_k) is not nn.Linear or type(self.to_v) is not nn.Linear:
            return self.to_k(context), self.to_v(context)
        kv = F.linear(context, torch.cat([self.to_k.weight, self.to_v.weight]))
        return kv.chunk(2, dim=-1)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attend(self.to_q(queries), *self.key_value(context))


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
        return self.feed_forward(x)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x + ff(norm2(x))`; on CPU in chunks of tokens, see `feed_forward_rows`."""
        rows = feed_forward_rows(x, self.ff)
        if x.shape[:-1].numel() <= rows:
            return x + self.ff(self.norm2(x))
        flat = x.reshape(-1, x.shape[-1])
        return torch.cat([part + self.ff(self.norm2(part)) for part in flat.split(rows)]).view(x.shape)


# Upper bound on the bytes of one feed-forward chunk's GEGLU projection (see `feed_forward_rows`).
FEED_FORWARD_CHUNK_BYTES = 16 * 2**20


def feed_forward_rows(x: torch.Tensor, ff: FeedForward) -> int:
    """Tokens per chunk of a feed-forward pass over `x`: all of them on accelerators, at most 1024 on CPU.

    The GEGLU projection is 8x as wide as the tokens: at 128 channels and 16 frames of 32x32 it is 64 MiB. On
    CPU an intermediate that large is mapped afresh from the OS (glibc's allocator maps anything over 32 MiB)
    and page-faulted in on every call, which doubled the feed-forward's time; chunks of 1024 tokens, or fewer for
    wide layers, keep every intermediate small enough to be reused from the heap and to stay in cache. Tokens
    are independent in a feed-forward, so chunking does not change the arithmetic.
    """
    if x.device.type != "cpu":
        return x.shape[:-1].numel()
    row_bytes = ff.net[0].proj.out_features * x.element_size()
    return max(1, min(1024, FEED_FORWARD_CHUNK_BYTES // row_bytes))


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero (CCEdit's identity initialisation of new paths) and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def randomize_zero_parameters(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> nn.Module:
    """Give every all-zero parameter of `module` N(0, std) values and return it.

    For untrained stand-ins (the tiny model, tests, benchmarks): zero-initialised paths (temporal convs, ControlNet
    zero convs) would otherwise compute nothing, so a fresh module would never exercise its branches.
    """
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module
