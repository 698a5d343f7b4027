#!/usr/bin/env python
"""What only an accelerator can show, in one run: half precision, the memory model against CUDA's allocator, model
CPU offload, torch.compile, channels-last convolutions, and the speed of a whole edit at the released size.

    python tools/check_cuda.py [--geometry sd15] [--height 512] [--width 512] [--frames 16] [--steps 4]
        [--device cuda] [--json OUT.json]

The keyframe model of a geometry is built with random weights (`ccedit.pipelines.tiny.tiny_components`) and edits a
synthetic clip with DDIM and text guidance. Each check prints one line, `ok` or `FAILED`, and the exit status is the
number of failed checks:

- `float16` / `bfloat16`: the edit's frames are finite; seconds per step and peak allocated memory.
- `memory model`: `ccedit.memory.estimate_edit_memory` against `torch.cuda.max_memory_allocated` of the same edit
  (weights included), within 15%.
- `channels last`: the convolutional networks in channels-last memory format give the same edit (below); its
  seconds per step against the default layout's.
- `cpu offload`: with `enable_model_cpu_offload` the frames equal the resident edit's and the peak is lower.
- `compile`: `compile_networks()` gives the same edit (below); its seconds per step and compile time.
- `wan-vace bfloat16`: the tiny Wan-VACE (a video transformer) edits 41 frames in windows in bfloat16 (its VAE in
  float32), finite and within 8/255 of float32 on average; `wan-vace cpu offload`: under model offload its frames
  equal the resident edit's.

"The same edit", for other kernels: in float32, the eager edit's frames within 2/255; in half precision, frames no
further from the float32 eager edit's than the eager edit at the same precision (mean absolute difference at most
1.5x the eager one's + 0.5/255): the compiler keeps fused half-precision arithmetic in float32, and channels-last
kernels accumulate in another order, so their frames differ from the eager half-precision ones by about as much
as those differ from float32.

`--device cpu --geometry tiny --dtype float32` runs the same checks on the CPU (the memory check then uses the CPU
allocator's high-water mark, the offload check moves nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build(geometry: str, device: str, dtype: torch.dtype):
    from diffusers.utils import logging as diffusers_logging

    from ccedit.pipelines import CCEditPipeline
    from ccedit.pipelines.tiny import tiny_components
    from ccedit.schedulers import build_scheduler

    diffusers_logging.set_verbosity_error()
    pipe = CCEditPipeline(**{**tiny_components(keyframe=True, geometry=geometry), "scheduler": build_scheduler("ddim")})
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def clip(frames: int, height: int, width: int) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(0)
    video = np.repeat(rng.integers(0, 255, (1, height, width, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):  # a bright square moving across
        x = t * (width // 2) // max(1, frames - 1)
        video[t, height // 3: height // 3 + height // 4, x: x + width // 4] = 255
    maps = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
    return video, maps


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def edit(pipe, video, maps, steps: int, device: str) -> tuple[np.ndarray, float, int]:
    """The frames, seconds per step and peak memory of one keyframe edit (peak: allocated on CUDA, allocator
    high-water mark on the CPU; weights included)."""
    from ccedit.memory import measured_peak_bytes

    frames = video.shape[0]
    kwargs = dict(keyframe=video[frames // 2], keyframe_index=frames // 2, num_inference_steps=steps,
                  guidance_scale=7.5, generator=torch.Generator().manual_seed(0), progress=False)
    weights = sum(p.numel() * p.element_size() for c in pipe.components.values()
                  if isinstance(c, torch.nn.Module) for p in c.parameters())
    out = {}

    def run():
        out["result"] = pipe("a watercolor painting", video, [maps], **kwargs)

    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
    run()
    synchronize(device)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:  # a second run under the profiler, which slows it: the timing is the first run's
        timings = out["result"].timings
        peak = weights + measured_peak_bytes(run)
        out["result"].timings = timings
    result = out["result"]
    return result.frames[0], result.timings["denoise"] / steps, peak


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 clips, in 1/255 steps."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--geometry", default="sd15", choices=["tiny", "medium", "sd15"])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from ccedit.memory import estimate_edit_memory

    dtype = getattr(torch, args.dtype)
    video, maps = clip(args.frames, args.height, args.width)
    report, failed = {"config": vars(args) | {"json": str(args.json)}}, 0

    def check(name: str, ok: bool, **figures) -> None:
        nonlocal failed
        failed += not ok
        report[name] = {"ok": bool(ok), **figures}
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"{name}: {'ok' if ok else 'FAILED'} ({shown})", flush=True)

    pipe = build(args.geometry, args.device, dtype)
    edit(pipe, video[:4], maps[:4], 1, args.device)  # warm-up: kernels, allocator
    frames, step_seconds, peak = edit(pipe, video, maps, args.steps, args.device)
    check(args.dtype, bool(np.isfinite(frames.astype(np.float32)).all()) and frames.std() > 0,
          seconds_per_step=step_seconds, peak_gib=peak / 2**30)

    estimate = estimate_edit_memory(height=args.height, width=args.width, num_frames=args.frames, dtype=dtype,
                                    guidance=True, keyframe=True, geometry=args.geometry,
                                    device_type=torch.device(args.device).type)
    ratio = estimate.peak_bytes / peak
    check("memory model", abs(ratio - 1) <= 0.15, estimate_gib=estimate.peak_gb, measured_gib=peak / 2**30,
          ratio=ratio, stage=estimate.stage)

    if args.dtype == "float16" and args.device.startswith("cuda"):
        other = build(args.geometry, args.device, torch.bfloat16)
        bf16_frames, bf16_step, _ = edit(other, video, maps, args.steps, args.device)
        check("bfloat16", bool(np.isfinite(bf16_frames.astype(np.float32)).all()), seconds_per_step=bf16_step)
        del other

    reference = frames
    if dtype != torch.float32:  # what the precision itself costs, to judge other kernels' frames against
        full = build(args.geometry, args.device, torch.float32)
        reference = edit(full, video, maps, args.steps, args.device)[0]
        del full
    eager_error = mean_difference(frames, reference)

    def same_edit(other: np.ndarray) -> bool:
        """Whether other kernels' frames are the same edit (see the module docstring)."""
        if dtype == torch.float32:
            return max_difference(other, frames) <= 2
        return mean_difference(other, reference) <= 1.5 * eager_error + 0.5

    # Channels-last convolutions (`model.channels_last`): slower or mixed on the CPU (see the README), so off by
    # default; whether cuDNN's half-precision kernels gain from it is for this check to say.
    pipe.enable_channels_last()
    last, last_step, _ = edit(pipe, video, maps, args.steps, args.device)
    pipe.disable_channels_last()
    check("channels last", same_edit(last), seconds_per_step=last_step, default_seconds_per_step=step_seconds,
          speedup=step_seconds / last_step, mean_difference_to_float32=mean_difference(last, reference))

    pipe.enable_model_cpu_offload(device=args.device)
    offloaded, offload_step, offload_peak = edit(pipe, video, maps, args.steps, args.device)
    moved = args.device.startswith("cuda")
    check("cpu offload", np.array_equal(offloaded, frames) and (offload_peak < peak or not moved),
          peak_gib=offload_peak / 2**30, seconds_per_step=offload_step)
    pipe.remove_all_hooks()
    pipe.to(args.device)

    pipe.compile_networks()
    started = time.perf_counter()
    edit(pipe, video, maps, args.steps, args.device)  # compiles
    compile_seconds = time.perf_counter() - started
    compiled, compiled_step, _ = edit(pipe, video, maps, args.steps, args.device)
    check("compile", same_edit(compiled), mean_difference_to_float32=mean_difference(compiled, reference),
          eager_mean_difference_to_float32=eager_error, max_difference_to_eager=max_difference(compiled, frames),
          seconds_per_step=compiled_step, eager_seconds_per_step=step_seconds, compile_seconds=compile_seconds)

    wan_checks(args.device, check)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return failed


def wan_checks(device: str, check) -> None:
    """The video-transformer kind: the tiny Wan-VACE in windows in bfloat16 (Wan's precision; its VAE stays float32)
    is finite and close to float32, and model offload gives the resident edit's frames."""
    from ccedit.kinds import load_pipeline

    video, maps = clip(41, 64, 64)
    frames = {}
    for name in ("float32", "bfloat16"):
        pipe = load_pipeline("wan-vace-tiny", scheduler="unipc", dtype=name, device=device)
        synchronize(device)
        started = time.perf_counter()
        frames[name] = pipe("a red car", video, [maps], num_inference_steps=4, window_length=21, window_overlap=8,
                            generator=torch.Generator().manual_seed(0), progress=False).frames[0]
        synchronize(device)
        seconds = time.perf_counter() - started
    check("wan-vace bfloat16", bool(np.isfinite(frames["bfloat16"].astype(np.float32)).all())
          and mean_difference(frames["bfloat16"], frames["float32"]) <= 8, seconds=seconds,
          mean_difference_to_float32=mean_difference(frames["bfloat16"], frames["float32"]))
    pipe.enable_model_cpu_offload(device=device)
    offloaded = pipe("a red car", video, [maps], num_inference_steps=4, window_length=21, window_overlap=8,
                     generator=torch.Generator().manual_seed(0), progress=False).frames[0]
    check("wan-vace cpu offload", np.array_equal(offloaded, frames["bfloat16"]))


if __name__ == "__main__":
    sys.exit(main())
