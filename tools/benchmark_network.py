#!/usr/bin/env python
"""Time ccedit's keyframe trident on CPU beside diffusers' AnimateDiff motion UNet + ControlNet.

Usage: python tools/benchmark_network.py [--batch 2] [--frames 8] [--channels 128] [--latent 32] [--runs 3]
       [--threads N] [--profile 25]

Both networks are built in this process with random weights (every zero-initialised tensor is given random values,
so every path computes), in float32, eval mode, under `torch.no_grad()`, and fed the same inputs:

- ccedit: the keyframe `TridentModel` (SD-1.5-shaped UNet + `CCEditTemporalAdapter` with cross-frame attention +
  one structure `ControlNetModel` run on every frame + `AppearanceEncoder` on the keyframe latent).
- peer: `UNetMotionModel.from_unet2d` (the same UNet + a `MotionAdapter`, one motion module after every ResBlock /
  transformer pair and in the middle block) + the same `ControlNetModel` run on the `batch * frames` frames, as
  diffusers' AnimateDiff ControlNet pipelines call it (text context repeated per frame, as they do).

Geometry (an SD-1.5 UNet at a width a 2-core CPU can run): `model_channels` = `--channels` (128), channel_mult
[1, 2, 4, 4], 2 ResBlocks per level, transformers at the first three levels, GroupNorm 32, text context 768 wide and
77 tokens long. Heads are `channels // 64` per level, so every attention (spatial, temporal, cross-frame, motion)
has head_dim 64, as in SD 2.x; the released SD-1.5 geometry (8 heads everywhere) differs only in how the same
FLOPs are split into heads. Latent `--latent` squared (32x32), structure maps 8x larger (256x256), keyframe latent
of the latent's size.

Reported per network:

- time: median wall time of `--runs` forwards after one warm-up; the two networks alternate run by run, so a
  neighbour's load on a shared machine hits both alike.
- GFLOP: `torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls), plus attention counted by hand,
  because the counter has no formula for the CPU kernel of `scaled_dot_product_attention`: each call adds
  `2·N·Lq·Lk·(E + Ev)` (QK^T and PV; `4·n·heads·Lq·Lk·d` for equal head dims). Norms and pointwise ops are not
  counted, for either network.
- util: GFLOP / time / peak, where peak is this machine's float32 GEMM throughput: the median of timed
  2048x2048x2048 `torch.mm` calls on the same thread count, the size and shape class of the networks' matmuls.
- peak MiB: the high-water mark of tensor memory allocated through torch's CPU allocator during one forward, on
  top of the weights and inputs, read from `torch.profiler`'s allocation events (`profile_memory=True`). This is
  what a forward costs in activations and kernel workspaces; allocations outside torch's allocator (e.g. BLAS
  thread buffers) are not seen. `weights MiB` is listed beside it.

`--profile N` additionally prints ccedit's N most expensive ops by self CPU time (shapes recorded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared FLOP accounting

from diffusers import ControlNetModel, MotionAdapter, UNet2DConditionModel, UNetMotionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from ccedit.models.geometry import Geometry  # noqa: E402
from ccedit.models import AppearanceEncoder, CCEditTemporalAdapter, TridentModel, VideoUNet  # noqa: E402
from ccedit.memory import measured_peak_bytes  # noqa: E402
from ccedit.models.layers import randomize_zero_parameters  # noqa: E402
from flop_accounting import counting_attention_flops, counts_attention_itself, flop_counter, gemm_peak_flops  # noqa: E402

HEAD_DIM = 64
CONTEXT_TOKENS = 77


def geometry_for(channels: int) -> Geometry:
    return Geometry(
        model_channels=channels,
        channel_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attention_resolutions=[4, 2, 1],
        num_heads=8,  # replaced per level by `heads_for` below
        context_dim=768,
    )


def heads_for(geometry: Geometry) -> tuple[int, ...]:
    return tuple(max(c // HEAD_DIM, 1) for c in geometry.block_out_channels)


def build_ccedit(geometry: Geometry) -> TridentModel:
    heads = heads_for(geometry)
    unet_cfg = {**geometry.unet_config(), "attention_head_dim": heads}
    controlnet_cfg = {**geometry.controlnet_config(), "attention_head_dim": heads}
    unet = UNet2DConditionModel(**unet_cfg)
    temporal_cfg = {**geometry.temporal_config(cross_frame_attention=True), "num_attention_heads": heads}
    temporal = CCEditTemporalAdapter(**temporal_cfg)
    controlnet = ControlNetModel(**controlnet_cfg)
    appearance = AppearanceEncoder(**{**geometry.appearance_config(), "num_attention_heads": heads})
    return TridentModel(VideoUNet(unet, temporal), [controlnet], appearance)


class AnimateDiffControlNet(torch.nn.Module):
    """diffusers' AnimateDiff + ControlNet denoiser step: ControlNet on every frame, then the motion UNet."""

    def __init__(self, geometry: Geometry):
        super().__init__()
        heads = heads_for(geometry)
        unet = UNet2DConditionModel(**{**geometry.unet_config(), "attention_head_dim": heads})
        adapter = MotionAdapter(
            block_out_channels=tuple(geometry.block_out_channels),
            motion_layers_per_block=geometry.num_res_blocks,
            motion_num_attention_heads=heads,
            motion_norm_num_groups=32,
            use_motion_mid_block=True,
        )
        self.unet = UNetMotionModel.from_unet2d(unet, adapter)
        self.controlnet = ControlNetModel(**{**geometry.controlnet_config(), "attention_head_dim": heads})

    def forward(self, sample, timestep, encoder_hidden_states, structure_maps):
        b, c, f, h, w = sample.shape
        context = encoder_hidden_states.repeat_interleave(f, dim=0)  # the pipelines repeat the prompt per frame
        frames = sample.transpose(1, 2).reshape(b * f, c, h, w)
        hint = structure_maps.transpose(1, 2).reshape(b * f, *structure_maps.shape[1:2], *structure_maps.shape[-2:])
        frame_timesteps = timestep.repeat_interleave(f)
        down, mid = self.controlnet(frames, frame_timesteps, context, controlnet_cond=hint, return_dict=False)
        return self.unet(
            sample, timestep, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample


@dataclass
class Inputs:
    sample: torch.Tensor  # (b, 4, f, h, w)
    timestep: torch.Tensor  # (b,)
    context: torch.Tensor  # (b, 77, 768)
    structure_maps: torch.Tensor  # (b, 3, f, 8h, 8w) in [0, 1]
    keyframe_latent: torch.Tensor  # (b, 4, h, w)


def make_inputs(geometry: Geometry, batch: int, frames: int, latent: int, generator: torch.Generator) -> Inputs:
    return Inputs(
        sample=torch.randn(batch, geometry.in_channels, frames, latent, latent, generator=generator),
        timestep=torch.full((batch,), 500, dtype=torch.long),
        context=torch.randn(batch, CONTEXT_TOKENS, geometry.context_dim, generator=generator),
        structure_maps=torch.rand(batch, 3, frames, 8 * latent, 8 * latent, generator=generator),
        keyframe_latent=torch.randn(batch, geometry.in_channels, latent, latent, generator=generator),
    )


def ccedit_forward(model: TridentModel, x: Inputs) -> torch.Tensor:
    return model(
        x.sample, x.timestep, x.context, structure_maps=x.structure_maps, keyframe_latent=x.keyframe_latent
    )


def peer_forward(model: AnimateDiffControlNet, x: Inputs) -> torch.Tensor:
    return model(x.sample, x.timestep, x.context, x.structure_maps)


def count_flops(forward) -> tuple[int, int]:
    """`(total, attention)` FLOPs of one call of `forward`."""
    counter = flop_counter()
    with counting_attention_flops() as attention, counter:
        forward()
    if counts_attention_itself(counter):  # a later torch may count the CPU kernel itself; then do not add it twice
        return counter.get_total_flops(), 0
    if attention["calls"] == 0:
        raise RuntimeError("no scaled_dot_product_attention call was seen: the attention FLOPs would be missing")
    return counter.get_total_flops() + attention["flops"], attention["flops"]


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2, help="videos per forward")
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--channels", type=int, default=128, help="model_channels of the UNet (SD-1.5: 320)")
    parser.add_argument("--latent", type=int, default=32, help="latent height and width")
    parser.add_argument("--runs", type=int, default=3, help="timed forwards per network, after one warm-up")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print ccedit's top N ops by self CPU time")
    args = parser.parse_args(argv)
    if args.channels % 32:
        parser.error(f"`--channels` must be a multiple of 32 (GroupNorm groups), got {args.channels}")
    if args.latent % 8:
        parser.error(f"`--latent` must be a multiple of 8 (three downsamplings), got {args.latent}")
    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # `from_unet2d` warns about float32 modules it does not have

    # 1. Build both networks and their shared inputs.
    geometry = geometry_for(args.channels)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    networks = {"ccedit": build_ccedit(geometry), "peer": AnimateDiffControlNet(geometry)}
    for model in networks.values():
        randomize_zero_parameters(model, generator)
        model.eval()
    x = make_inputs(geometry, args.batch, args.frames, args.latent, generator)
    forwards = {
        "ccedit": lambda: ccedit_forward(networks["ccedit"], x),
        "peer": lambda: peer_forward(networks["peer"], x),
    }
    print(
        f"geometry: channels {geometry.block_out_channels}, heads {heads_for(geometry)}, {geometry.num_res_blocks} "
        f"ResBlocks/level, context {CONTEXT_TOKENS}x{geometry.context_dim}; batch {args.batch} x {args.frames} "
        f"frames, latent {args.latent}x{args.latent}; {args.threads} threads",
        flush=True,
    )

    with torch.no_grad():
        # 2. FLOPs and memory (one forward each, not timed), which also serve as warm-up.
        flops, attention_flops, peak_bytes = {}, {}, {}
        for name, forward in forwards.items():
            flops[name], attention_flops[name] = count_flops(forward)
            peak_bytes[name] = measured_peak_bytes(forward)
            forward()

        # 3. Time the networks in alternating order, each round next to a GEMM peak measurement, so that load
        #    from a neighbour on a shared machine hits both networks and the peak alike.
        peaks: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in forwards}
        for run in range(args.runs):
            peaks.append(gemm_peak_flops(repeats=9, onednn=False))
            for name in list(forwards)[:: 1 if run % 2 == 0 else -1]:
                start = time.perf_counter()
                forwards[name]()
                times[name].append(time.perf_counter() - start)
            print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
                  file=sys.stderr, flush=True)
        peaks.append(gemm_peak_flops(repeats=9, onednn=False))
        peak = statistics.median(peaks)

        # 4. Report.
        print(f"float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s (median of {len(peaks)} measurements of 2048^3 "
              f"torch.mm: {', '.join(f'{p / 1e9:.0f}' for p in peaks)})")
        header = (
            f"{'network':<8} {'time s':>7} {'min-max s':>11} {'GFLOP':>8} {'attn':>7} {'GFLOP/s':>8} {'util':>5} "
            f"{'peak MiB':>9} {'weights MiB':>12}"
        )
        print(header)
        print("-" * len(header))
        for name in forwards:
            t = statistics.median(times[name])
            print(
                f"{name:<8} {t:7.2f} {min(times[name]):5.2f}-{max(times[name]):<5.2f} {flops[name] / 1e9:8.1f} "
                f"{attention_flops[name] / 1e9:7.1f} {flops[name] / t / 1e9:8.1f} {flops[name] / t / peak:5.2f} "
                f"{peak_bytes[name] / 2**20:9.0f} {weight_bytes(networks[name]) / 2**20:12.0f}"
            )
        # Runs of one round saw the same load, so their ratio is steadier than the ratio of the medians.
        ratios = [
            (flops["ccedit"] / tc) / (flops["peer"] / tp) for tc, tp in zip(times["ccedit"], times["peer"])
        ]
        print(f"ccedit/peer utilisation: {statistics.median(ratios):.2f} (median of per-round ratios: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")

        # 5. Optional: where ccedit's time goes.
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                forwards["ccedit"]()
            table = prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=args.profile
            )
            print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
