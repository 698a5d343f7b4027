#!/usr/bin/env python
"""Speed and memory of a whole edit: ccedit against diffusers' AnimateDiff video-to-video ControlNet pipeline.

    python tools/benchmark.py [--geometry tiny|medium|sd15] [--height H] [--width W] [--frames N] [--steps N]
        [--guidance G] [--dtype float32|float16|bfloat16] [--device cpu|cuda] [--runs N]
        [--sweep 17,34,68,136] [--window 17] [--compile] [--json OUT.json] [--markdown OUT.md]

Both sides are built with random weights of one geometry (`ccedit.pipelines.tiny.GEOMETRIES`: `medium` is SD-1.5's
UNet at 128 channels, `sd15` the released size) and share the VAE, the text encoder, the UNet's weights and the
ControlNet; the scheduler is DDIM for both (one network evaluation per step), with the same steps, guidance
(batched [uncond; cond]), frames, size and structure maps (Canny, computed by ccedit's annotator). Rows:

- `ccedit` (text): the text-to-video trident (`CCEditPipeline`, no appearance branch), the whole clip in one window.
- `ccedit+key`: the keyframe trident with one keyframe at the centre frame (appearance branch, cross-frame
  attention, the keyframe kept at its frame).
- `peer`: `AnimateDiffVideoToVideoControlNetPipeline` (the UNet + a `MotionAdapter` of the same widths, the
  ControlNet on every frame) at `strength=1`, so it runs every step as ccedit does.

Timing (one process, `--runs` repetitions after a warm-up (the FLOP-counted edit), medians; the rows alternate
within each repetition, so a neighbour's load on a shared machine hits all alike): per stage (annotators, encode:
prompt + VAE encoding of keyframe or video, denoise, decode, write: the mp4 through ccedit's writer), seconds per
step and per frame. The keyframe model's extra time is the median over the repetitions of its time over the text
model's in the same repetition.
Model FLOPs are counted over one edit with `torch.utils.flop_counter.FlopCounterMode`, plus the attention FLOPs it
does not count for `scaled_dot_product_attention` on the CPU (`2·N·Lq·Lk·(E + Ev)` per call; checked at run time:
when the counter does count the call, nothing is added). MFU = model FLOPs / time / the dense float GEMM
throughput of the same device measured in every repetition (median); HFU the same with every FLOP executed. Model
FLOPs count the work once: the counted FLOPs with the ControlNet hint encoder's counted once per frame (the peer
encodes every frame's maps again at every call and for both guidance halves; ccedit once per clip), as model FLOP
utilisation leaves recomputation out. Branch costs: FLOPs per module and time inside each branch's modules
(forward hooks, in hooked edits of their own after the timed ones, as the hooks cost time themselves).

Memory (one fresh process per row, so that peaks are not inherited): on the CPU the rise of the resident set's
high-water mark (VmHWM, reset through /proc/self/clear_refs after the same edit as a warm-up) over the edit, with
`MALLOC_MMAP_THRESHOLD_` lowered so that freed tensors go back to the system; on CUDA the peak allocated. `peak mem
/ frame` is that rise divided by the frames. The memory model (`ccedit.memory`) is checked against the allocator's
high-water mark of the keyframe edit plus its weights, and gives the SD-1.5 figure at 512x768, 17 frames, float16.

The clip-length sweep runs the text trident with `--window`-frame windows (one fresh process per length).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "tools"))  # the benchmarks' shared FLOP accounting, also when loaded by the tests

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flop_accounting import counting_attention_flops, counts_attention_itself, flop_counter, gemm_peak_flops  # noqa: E402

# Defaults per geometry: a whole run (3 rows x (FLOP count + runs), memory processes, sweep) fits in a few minutes
# on a 2-core CPU for `medium`. Five repetitions there: one repetition's keyframe-to-text time ratio varies by
# about 3 percentage points on a shared 2-core machine, about the size of the differences it is read for.
DEFAULTS = {
    "tiny": dict(height=128, width=128, frames=16, steps=4, runs=3),
    "medium": dict(height=96, width=96, frames=8, steps=2, runs=5),
    "sd15": dict(height=512, width=512, frames=16, steps=10, runs=2),
}
ROWS = ("ccedit", "ccedit+key", "peer")
BRANCH_RUNS = 2  # hooked edits per row for the branch times, after the timed runs
PROMPT = "a watercolor painting"


# ----------------------------------------------------------------------------------------------- building


def build_rows(geometry: str, device: str, dtype: torch.dtype, rows=ROWS) -> dict:
    """The pipelines of `rows`, sharing the VAE, text encoder, UNet weights and ControlNet."""
    from diffusers import AnimateDiffVideoToVideoControlNetPipeline, DDIMScheduler, MotionAdapter
    from diffusers.utils import logging as diffusers_logging

    from ccedit.models.layers import randomize_zero_parameters
    from ccedit.pipelines import CCEditPipeline
    from ccedit.pipelines.tiny import GEOMETRIES, tiny_components
    from ccedit.schedulers import build_scheduler

    diffusers_logging.set_verbosity_error()
    keyed = tiny_components(keyframe=True, geometry=geometry)
    pipes = {}
    if "ccedit" in rows:
        plain = tiny_components(keyframe=False, geometry=geometry)
        parts = {**keyed, "temporal": plain["temporal"], "appearance": None}
        pipes["ccedit"] = CCEditPipeline(**{**parts, "scheduler": build_scheduler("ddim")})
    if "ccedit+key" in rows:
        pipes["ccedit+key"] = CCEditPipeline(**{**keyed, "scheduler": build_scheduler("ddim")})
    if "peer" in rows:
        geo = GEOMETRIES[geometry]
        torch.manual_seed(3)
        adapter = MotionAdapter(
            block_out_channels=tuple(geo.block_out_channels), motion_layers_per_block=geo.num_res_blocks,
            motion_num_attention_heads=geo.num_heads, motion_norm_num_groups=32, use_motion_mid_block=True,
            motion_max_seq_length=max(32, 2 * DEFAULTS["tiny"]["frames"]),
        )
        randomize_zero_parameters(adapter, torch.Generator().manual_seed(3))  # zero-initialised outputs compute too
        pipes["peer"] = AnimateDiffVideoToVideoControlNetPipeline(
            vae=keyed["vae"], text_encoder=keyed["text_encoder"], tokenizer=keyed["tokenizer"], unet=keyed["unet"],
            motion_adapter=adapter.eval(), controlnet=keyed["controlnet"],
            scheduler=DDIMScheduler.from_config(build_scheduler("ddim").config),
        )
        pipes["peer"].unet.eval()
    for row, pipe in pipes.items():
        pipe.to(device)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if row.startswith("ccedit"):
            pipe.enable_cpu_tuning()  # model.cpu_tuning=true: ccedit as a CPU user should run it (a no-op on a GPU)
    return pipes


def compile_row(row: str, pipe) -> None:
    """`torch.compile` the networks of every step: ccedit's through its pipeline, the peer's UNet and ControlNet."""
    if row.startswith("ccedit"):
        pipe.compile_networks()
    else:
        pipe.unet.compile()
        pipe.controlnet.compile()


def synthetic_clip(frames: int, height: int, width: int) -> np.ndarray:
    """A square crossing a gradient: every frame differs and the Canny maps have edges."""
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    video[..., 2] = np.linspace(0, 255, width, dtype=np.uint8)
    video[..., 1] = np.linspace(0, 180, height, dtype=np.uint8)[:, None]
    side = max(8, height // 4)
    for t in range(frames):
        x = int(t * (width - side) / max(1, frames - 1))
        video[t, height // 3: height // 3 + side, x: x + side] = (255, 200, 0)
    return video


# ----------------------------------------------------------------------------------------------- one edit


class StageClock:
    """Seconds per stage of one edit, filled by `edit`; on a GPU each stage ends once its kernels have run."""

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device

    @contextlib.contextmanager
    def stage(self, name: str):
        from ccedit.pipelines.pipeline_ccedit import finished_time

        start = finished_time(self.device)
        try:
            yield
        finally:
            self.seconds[name] += finished_time(self.device) - start


@contextlib.contextmanager
def timed_methods(obj, names: dict[str, str], clock: StageClock):
    """Time calls of `obj`'s methods into stages (`{method: stage}`), for the peer's pipeline."""
    originals = {m: getattr(obj, m) for m in names}

    def wrap(method, stage):
        def timed(*args, **kwargs):
            with clock.stage(stage):
                return method(*args, **kwargs)
        return timed

    for m, stage in names.items():
        setattr(obj, m, wrap(originals[m], stage))
    try:
        yield
    finally:
        for m in names:
            delattr(obj, m)  # back to the class's method


def edit(row: str, pipe, video: np.ndarray, steps: int, guidance: float, window: int | None = None,
         out_dir: Path | None = None) -> dict[str, float]:
    """One whole edit of `video`; returns seconds per stage and `total`."""
    from PIL import Image

    from ccedit.annotators import build_annotator
    from ccedit.io import write_video

    clock = StageClock(pipe._execution_device)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with clock.stage("annotators"):
        maps = build_annotator("canny")(video)  # (T, 3, H, W) float in [0, 1]
    frames = video.shape[0]
    if row.startswith("ccedit"):
        key = {"keyframe": video[frames // 2], "keyframe_index": frames // 2} if row == "ccedit+key" else {}
        result = pipe(PROMPT, video, [maps], num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                      window_length=window, progress=False, **key)
        clock.seconds["encode"] += result.timings["encode_prompt"] + result.timings["encode_keyframe"]
        clock.seconds["denoise"] += result.timings["denoise"]
        clock.seconds["decode"] += result.timings["decode"]
        edited = result.frames[0]
    else:
        pil_video = [Image.fromarray(f) for f in video]
        pil_maps = [Image.fromarray((m.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for m in maps]
        t0 = time.perf_counter()
        # prepare_latents encodes the video with the VAE; the conditioning frames are only resized and stacked
        with timed_methods(pipe, {"encode_prompt": "encode", "prepare_latents": "encode", "decode_latents": "decode",
                                  "prepare_conditioning_frames": "encode"}, clock):
            out = pipe(video=pil_video, prompt=PROMPT, conditioning_frames=pil_maps, num_inference_steps=steps,
                       height=video.shape[1], width=video.shape[2],
                       guidance_scale=guidance, strength=1.0, generator=generator, output_type="np",
                       decode_chunk_size=8)
        call = time.perf_counter() - t0
        clock.seconds["denoise"] += call - clock.seconds["encode"] - clock.seconds["decode"]
        edited = (out.frames[0] * 255).round().astype(np.uint8)
    with clock.stage("write"), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        write_video(Path(tmp) / "out.mp4", edited, 8.0)
    clock.seconds["total"] = time.perf_counter() - start
    return dict(clock.seconds)


# ----------------------------------------------------------------------------------------------- FLOPs and branches


def hint_encoders(row: str, pipe) -> list[torch.nn.Module]:
    """The ControlNets' hint encoders (`controlnet_cond_embedding`): input-only work, needed once per frame."""
    nets = pipe.controlnets if row.startswith("ccedit") else [pipe.controlnet]
    return [net.controlnet_cond_embedding for net in nets]


def branch_modules(row: str, pipe) -> dict[str, list[torch.nn.Module]]:
    """The root modules of each branch of a row (everything under a root belongs to its branch)."""
    branches = {"hint encoder": hint_encoders(row, pipe)}
    if row.startswith("ccedit"):
        temporal = pipe.temporal
        branches.update({"main (UNet + temporal)": [pipe.unet, temporal], "temporal layers": [temporal],
                         "structure (ControlNet)": pipe.controlnets})
        cross = [m for n, m in temporal.named_modules() if n.endswith("cross_frame")]
        if cross:
            branches["cross-frame attention"] = cross
        if pipe.appearance is not None:
            branches["appearance"] = [pipe.appearance]
        return branches
    motion = [m for n, m in pipe.unet.named_modules() if n.endswith("motion_modules")]
    return {**branches, "main (UNet + motion)": [pipe.unet], "motion modules": motion,
            "structure (ControlNet)": [pipe.controlnet]}


@contextlib.contextmanager
def branch_meter(modules: dict[str, list[torch.nn.Module]], seconds: dict[str, float], flops: dict[str, int],
                 total_flops=None, device: torch.device = torch.device("cpu")):
    """Accumulate, per branch, the time (and, given `total_flops()`, the FLOPs) spent inside its modules.

    Every module under a branch's roots is hooked, because some are called directly by their grandparents (the
    trident calls the temporal adapter's layers, never the adapter); only the outermost entry counts. On a GPU the
    clock waits for the branch's kernels at its entry and exit.
    """
    from ccedit.pipelines.pipeline_ccedit import finished_time

    handles, depth, started = [], defaultdict(int), {}

    for branch, roots in modules.items():
        def pre(module, args, branch=branch):
            if depth[branch] == 0:
                started[branch] = (finished_time(device), total_flops() if total_flops else 0)
            depth[branch] += 1

        def post(module, args, output, branch=branch):
            depth[branch] -= 1
            if depth[branch] == 0:
                t0, f0 = started[branch]
                seconds[branch] += finished_time(device) - t0
                if total_flops:
                    flops[branch] += total_flops() - f0

        seen = set()
        for root in roots:
            for m in root.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def count_flops(run, modules: dict[str, list[torch.nn.Module]]) -> dict[str, int]:
    """FLOPs of `run()`: `total`, `attention_added` (the hand-counted part), per branch, and `hint_frames`: the
    frames that went through the branch `hint encoder` (when there is one)."""
    counter = flop_counter()
    seconds: dict[str, float] = defaultdict(float)
    flops: dict[str, int] = defaultdict(int)
    hint_frames = [0]
    handles = [m.register_forward_pre_hook(lambda m, args: hint_frames.__setitem__(0, hint_frames[0] + len(args[0])))
               for m in modules.get("hint encoder", [])]
    with counting_attention_flops() as attention, counter:
        # A torch that counts the attention kernel itself lists it; then nothing is added (checked below).
        total = lambda: counter.get_total_flops() + attention["flops"]  # noqa: E731
        with branch_meter(modules, seconds, flops, total):
            run()
    for h in handles:
        h.remove()
    if counts_attention_itself(counter):
        raise RuntimeError("this torch counts scaled_dot_product_attention itself: drop the hand count")
    return {"total": total(), "attention_added": attention["flops"], "hint_frames": hint_frames[0], **flops}


def model_flops(flops: dict[str, int], frames: int) -> int:
    """The FLOPs of the work itself: the counted total with the hint encoders' work counted once per frame.

    Model FLOP utilisation counts the FLOPs the work needs, not what an implementation executes (recomputation is
    hardware FLOPs): the hint encoding depends on the structure maps alone, so encoding every frame again at every
    call and for both guidance halves adds executed FLOPs, not work.
    """
    hint = flops.get("hint encoder", 0)
    if not hint:
        return flops["total"]
    return flops["total"] - hint + hint * frames // flops["hint_frames"]


# ----------------------------------------------------------------------------------------------- device peak


# ----------------------------------------------------------------------------------------------- workers


def resident_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def worker_timing(cfg: dict) -> dict:
    """All rows in one process: FLOPs (whole and per branch) from one counted edit each, then alternated timed
    runs, then hooked runs for the branch times."""
    dtype = getattr(torch, cfg["dtype"])
    if cfg.get("compile"):
        # Rows of their own (the same seeded weights): a compiled network shared by two rows would compile again
        # whenever the other row calls it differently (ccedit passes encoded hints, the peer maps).
        pipes = {row: build_rows(cfg["geometry"], cfg["device"], dtype, rows=(row,))[row] for row in ROWS}
    else:
        pipes = build_rows(cfg["geometry"], cfg["device"], dtype)
    video = synthetic_clip(cfg["frames"], cfg["height"], cfg["width"])
    run = lambda row: edit(row, pipes[row], video, cfg["steps"], cfg["guidance"])  # noqa: E731
    result = {}
    with torch.no_grad():
        for row in ROWS:  # the counted edit is also each row's warm-up
            result[row] = {"flops": count_flops(lambda row=row: run(row), branch_modules(row, pipes[row]))}
        if cfg.get("compile"):  # after counting: the counter does not see inside compiled graphs
            for row in ROWS:
                compile_row(row, pipes[row])
                started = time.perf_counter()
                run(row)  # compiles
                result[row]["compile_seconds"] = time.perf_counter() - started
        peaks, stages, branch_seconds = [], {r: [] for r in ROWS}, {r: defaultdict(list) for r in ROWS}
        for rep in range(cfg["runs"]):
            peaks.append(gemm_peak_flops(cfg["device"], dtype))
            for row in ROWS[rep % len(ROWS):] + ROWS[: rep % len(ROWS)]:
                stages[row].append(run(row))
            print(f"  run {rep + 1}/{cfg['runs']}: " + ", ".join(f"{r} {stages[r][-1]['total']:.1f}s" for r in ROWS),
                  file=sys.stderr, flush=True)
        # Branch times come from runs of their own: the hooks on every module of a branch cost time themselves
        # (about 35 ms per keyframe edit at `medium`, 5 ms per text edit), which the timed runs above must not pay.
        # Hooks added to compiled networks would make them compile again: no branch times when compiled.
        for rep in range(0 if cfg.get("compile") else BRANCH_RUNS):
            for row in ROWS:
                seconds: dict[str, float] = defaultdict(float)
                with branch_meter(branch_modules(row, pipes[row]), seconds, defaultdict(int),
                                  device=torch.device(cfg["device"])):
                    run(row)
                for branch, s in seconds.items():
                    branch_seconds[row][branch].append(s)
        peaks.append(gemm_peak_flops(cfg["device"], dtype))
    result["gemm_peak_flops"] = statistics.median(peaks)
    result["gemm_peaks"] = peaks
    for row in ROWS:
        keys = stages[row][0].keys()
        result[row]["seconds"] = {k: statistics.median(s[k] for s in stages[row]) for k in keys}
        result[row]["runs"] = [s["total"] for s in stages[row]]
        result[row]["branch_seconds"] = {b: statistics.median(v) for b, v in branch_seconds[row].items()}
    # Per-repetition ratios against the peer: the rows of one repetition saw the same load.
    for row in ("ccedit", "ccedit+key"):
        result[row]["time_ratio_to_peer_per_run"] = [
            a["total"] / b["total"] for a, b in zip(stages[row], stages["peer"])]
    # The keyframe model's extra time per repetition: its spread says how far one run's ratio can be trusted.
    result["keyframe_extra_time_per_run"] = [
        a["total"] / b["total"] - 1 for a, b in zip(stages["ccedit+key"], stages["ccedit"])]
    return result


def worker_memory(cfg: dict) -> dict:
    """One row in a fresh process: the rise of peak memory over one edit (after the same edit as a warm-up)."""
    dtype = getattr(torch, cfg["dtype"])
    row = cfg["row"]
    cuda = cfg["device"].startswith("cuda")
    pipes = build_rows(cfg["geometry"], cfg["device"], dtype, rows=(row,))
    pipe = pipes[row]
    weights = sum(p.numel() * p.element_size() for c in pipe.components.values()
                  if isinstance(c, torch.nn.Module) for p in c.parameters())
    window = cfg.get("window")
    with torch.no_grad():
        # The warm-up is the measured edit itself: the kernels' one-time state (oneDNN's compiled primitives for each
        # shape, thread pools) is then in the baseline, and the rise is the edit's own memory.
        video = synthetic_clip(cfg["frames"], cfg["height"], cfg["width"])
        edit(row, pipe, video, cfg["steps"], cfg["guidance"], window=window)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = resident_bytes("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        seconds = edit(row, pipe, video, cfg["steps"], cfg["guidance"], window=window)
        peak = torch.cuda.max_memory_allocated() if cuda else resident_bytes("VmHWM")
        out = {"peak_rise_bytes": peak - before, "before_bytes": before, "weights_bytes": weights, "seconds": seconds}
        if cfg.get("allocator_peak") and not cuda:
            from ccedit.memory import measured_peak_bytes

            out["allocator_peak_bytes"] = weights + measured_peak_bytes(
                lambda: edit(row, pipe, video, cfg["steps"], cfg["guidance"], window=window))
    return out


def spawn(kind: str, cfg: dict) -> dict:
    """Run a worker in a fresh process and return what it printed as JSON on its last line."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kind == "memory":
        # Freed tensors go back to the system, so that the resident high-water mark follows the live tensors. Only
        # here: every large allocation then maps fresh pages, which halves the speed of a whole edit on the CPU.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(cfg)], env=env,
                          stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} worker failed ({proc.returncode}) for {cfg}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- report


def summarise(cfg: dict, timing: dict, memory: dict, sweep: dict, model: dict) -> dict:
    peak = timing["gemm_peak_flops"]
    frames, steps = cfg["frames"], cfg["steps"]
    out: dict = {"config": cfg, "machine": machine(), "gemm_peak_gflops": peak / 1e9,
                 "gemm_peaks_gflops": [p / 1e9 for p in timing["gemm_peaks"]]}
    for row in ROWS:
        t, f = timing[row]["seconds"], timing[row]["flops"]
        key = {"ccedit": "ccedit", "ccedit+key": "ccedit_keyframe", "peer": "peer"}[row]
        out[f"{key}.seconds"] = t
        out[f"{key}.runs"] = timing[row]["runs"]
        out[f"{key}.seconds_per_frame"] = t["total"] / frames
        out[f"{key}.seconds_per_step"] = t["denoise"] / steps
        work = model_flops(f, frames)
        out[f"{key}.gflop"] = f["total"] / 1e9
        out[f"{key}.gflop_model"] = work / 1e9
        out[f"{key}.gflop_per_step"] = {
            b: v / steps / 1e9 for b, v in f.items() if b not in ("total", "attention_added", "hint_frames")}
        out[f"{key}.gflop_attention_added"] = f["attention_added"] / 1e9
        out[f"{key}.hint_frames_encoded"] = f["hint_frames"]
        out[f"{key}.gflops_achieved"] = f["total"] / t["total"] / 1e9
        out[f"{key}.mfu"] = work / t["total"] / peak
        out[f"{key}.hfu"] = f["total"] / t["total"] / peak
        if "compile_seconds" in timing[row]:
            out[f"{key}.compile_seconds"] = timing[row]["compile_seconds"]
        out[f"{key}.branch_seconds_per_step"] = {b: v / steps for b, v in timing[row]["branch_seconds"].items()}
        m = memory[row]
        out[f"{key}.peak_mem_mb"] = m["peak_rise_bytes"] / 2**20
        out[f"{key}.peak_mem_per_frame_mb"] = m["peak_rise_bytes"] / 2**20 / frames
        out[f"{key}.weights_mb"] = m["weights_bytes"] / 2**20
    for key in ("ccedit", "ccedit_keyframe"):
        out[f"{key}.time_ratio_to_peer"] = out[f"{key}.seconds"]["total"] / out["peer.seconds"]["total"]
        out[f"{key}.time_ratio_to_peer_per_run"] = timing["ccedit" if key == "ccedit" else "ccedit+key"][
            "time_ratio_to_peer_per_run"]
        out[f"{key}.flop_ratio_to_peer"] = out[f"{key}.gflop_model"] / out["peer.gflop_model"]
        out[f"{key}.time_per_flop_ratio_to_peer"] = out[f"{key}.time_ratio_to_peer"] / out[f"{key}.flop_ratio_to_peer"]
        out[f"{key}.mem_ratio_to_peer"] = out[f"{key}.peak_mem_mb"] / out["peer.peak_mem_mb"]
    # Paired: the two rows of one repetition ran back to back under the same load, so the median of the
    # repetitions' ratios is steadier than the ratio of the rows' medians (which may come from different ones).
    out["keyframe.extra_time_per_run"] = timing["keyframe_extra_time_per_run"]
    out["keyframe.extra_time"] = statistics.median(out["keyframe.extra_time_per_run"])
    out["keyframe.extra_flops"] = out["ccedit_keyframe.gflop_model"] / out["ccedit.gflop_model"] - 1
    out["keyframe.relative_utilisation"] = (1 + out["keyframe.extra_flops"]) / (1 + out["keyframe.extra_time"])
    out["sweep"] = sweep
    out.update(model)
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def markdown(s: dict) -> str:
    c = s["config"]
    lines = [
        f"{c['geometry']} geometry, {c['width']}x{c['height']}, {c['frames']} frames, {c['steps']} DDIM steps, "
        f"guidance {c['guidance']}, {c['dtype']}, {c['device']}{', torch.compile' if c.get('compile') else ''}; "
        f"{s['machine']}; GEMM peak "
        f"{s['gemm_peak_gflops']:.0f} GFLOP/s; medians of {c['runs']} alternated runs",
        "",
        "| row | s/edit | s/frame | s/step | annot. | encode | denoise | decode | write | GFLOP/step (work, run) "
        "| MFU | HFU | peak MiB | MiB/frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("ccedit", "ccedit (text)"), ("ccedit_keyframe", "ccedit (keyframe)"), ("peer", "peer")):
        t = s[f"{key}.seconds"]
        work, run = s[f"{key}.gflop_model"] / c["steps"], s[f"{key}.gflop"] / c["steps"]
        lines.append(
            f"| {label} | {t['total']:.2f} | {s[f'{key}.seconds_per_frame']:.3f} | {s[f'{key}.seconds_per_step']:.2f} "
            f"| {t.get('annotators', 0):.2f} | {t.get('encode', 0):.2f} | {t['denoise']:.2f} | {t['decode']:.2f} "
            f"| {t.get('write', 0):.2f} | {work:.1f}, {run:.1f} | {s[f'{key}.mfu']:.2f} | {s[f'{key}.hfu']:.2f} "
            f"| {s[f'{key}.peak_mem_mb']:.0f} "
            f"| {s[f'{key}.peak_mem_per_frame_mb']:.1f} |"
        )
    lines += ["", "| branch | ccedit (text) GFLOP, s per step | ccedit (keyframe) GFLOP, s per step "
              "| peer GFLOP, s per step |",
              "|---|---|---|---|"]
    branches = []
    for key in ("ccedit", "ccedit_keyframe", "peer"):
        branches += [b for b in s[f"{key}.gflop_per_step"] if b not in branches]
    for b in branches:
        cells = []
        for key in ("ccedit", "ccedit_keyframe", "peer"):
            g = s[f"{key}.gflop_per_step"].get(b)
            sec = s[f"{key}.branch_seconds_per_step"].get(b)
            cells.append("" if g is None else f"{g:.1f}, {sec:.2f}" if sec is not None else f"{g:.1f}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += ["", f"ccedit/peer: time {s['ccedit.time_ratio_to_peer']:.2f}, FLOPs {s['ccedit.flop_ratio_to_peer']:.2f}, "
              f"time per FLOP {s['ccedit.time_per_flop_ratio_to_peer']:.2f}, "
              f"peak memory {s['ccedit.mem_ratio_to_peer']:.2f}; keyframe model: "
              f"{100 * s['keyframe.extra_time']:+.1f}% time (median of the runs' "
              f"{', '.join(f'{100 * r:+.1f}%' for r in s['keyframe.extra_time_per_run'])}) "
              f"for {100 * s['keyframe.extra_flops']:+.1f}% FLOPs: its utilisation "
              f"{s['keyframe.relative_utilisation']:.3f} of the text model's"]
    if s["sweep"]:
        lines += ["", f"clip-length sweep (ccedit text, {c['sweep_size']}x{c['sweep_size']}, {c['sweep_steps']} step, "
                  f"{c['window']}-frame windows, one process each):", "",
                  "| frames | windows | s/frame | peak MiB | MiB/frame |", "|---|---|---|---|---|"]
        for n, r in s["sweep"].items():
            lines.append(f"| {n} | {r['windows']} | {r['seconds_per_frame']:.3f} | {r['peak_mem_mb']:.0f} "
                         f"| {r['peak_mem_per_frame_mb']:.1f} |")
    mm = s.get("memory_model.check")
    if mm:
        lines += ["", f"memory model: {mm['estimate_mb']:.0f} MiB estimated against {mm['measured_mb']:.0f} MiB "
                  f"measured (keyframe edit, allocator peak + weights; ratio {mm['ratio']:.2f}); SD-1.5 keyframe model "
                  f"at 512x768, 17 frames, float16, guidance: {s['memory_model.fp16_512x768x17_keyframe_gb']:.1f} GiB"]
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        cfg = json.loads(sys.argv[3])
        torch.set_num_threads(cfg["threads"])
        result = {"timing": worker_timing, "memory": worker_memory}[sys.argv[2]](cfg)
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--geometry", choices=list(DEFAULTS), default="medium")
    parser.add_argument("--height", type=int, help="frame height (default: per geometry)")
    parser.add_argument("--width", type=int, help="frame width (default: per geometry)")
    parser.add_argument("--frames", type=int, help="frames of the clip (default: per geometry)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: per geometry)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, help="timed repetitions per row, after a warm-up (default: per geometry)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="torch.compile every row's networks before timing")
    parser.add_argument("--sweep", default="17,34,68,136", help="clip lengths for the sweep ('' for none)")
    parser.add_argument("--window", type=int, default=17, help="window of the sweep")
    parser.add_argument("--sweep-steps", type=int, default=1, help="DDIM steps of the sweep")
    parser.add_argument("--sweep-size", type=int, default=64, help="frame height and width of the sweep")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    d = DEFAULTS[args.geometry]
    cfg = dict(geometry=args.geometry, height=args.height or d["height"], width=args.width or d["width"],
               frames=args.frames or d["frames"], steps=args.steps or d["steps"], guidance=args.guidance,
               dtype=args.dtype, device=args.device, runs=args.runs or d["runs"], threads=args.threads, window=args.window,
               sweep_size=args.sweep_size, sweep_steps=args.sweep_steps, compile=args.compile)
    started = time.perf_counter()

    print(f"timing {', '.join(ROWS)} ...", file=sys.stderr, flush=True)
    timing = spawn("timing", cfg)
    memory = {}
    for row in ROWS:
        print(f"memory of {row} ...", file=sys.stderr, flush=True)
        memory[row] = spawn("memory", {**cfg, "row": row, "allocator_peak": row == "ccedit+key"})
    sweep = {}
    for n in [int(x) for x in args.sweep.split(",") if x]:
        print(f"sweep: {n} frames ...", file=sys.stderr, flush=True)
        from ccedit.pipelines.windows import plan_passes

        r = spawn("memory", {**cfg, "row": "ccedit", "frames": n, "steps": args.sweep_steps, "window": args.window,
                             "height": args.sweep_size, "width": args.sweep_size})
        sweep[n] = {"windows": len(plan_passes(n, args.window)[0][1]), "seconds": r["seconds"],
                    "seconds_per_frame": r["seconds"]["total"] / n, "peak_mem_mb": r["peak_rise_bytes"] / 2**20,
                    "peak_mem_per_frame_mb": r["peak_rise_bytes"] / 2**20 / n}

    from ccedit.memory import estimate_edit_memory

    estimate = estimate_edit_memory(height=cfg["height"], width=cfg["width"], num_frames=cfg["frames"],
                                    dtype=getattr(torch, cfg["dtype"]), guidance=cfg["guidance"] > 1, keyframe=True,
                                    geometry=cfg["geometry"], device_type=torch.device(cfg["device"]).type)
    measured = memory["ccedit+key"].get("allocator_peak_bytes") or memory["ccedit+key"]["peak_rise_bytes"]
    sd15 = estimate_edit_memory(height=512, width=768, num_frames=17, dtype=torch.float16, guidance=True,
                                keyframe=True, geometry="sd15")
    model = {
        "memory_model.fp16_512x768x17_keyframe_gb": sd15.peak_gb,
        "memory_model.fp16_512x768x17_keyframe_stages_gb": {k: v / 2**30 for k, v in sd15.stages.items()},
        "memory_model.check": {"estimate_mb": estimate.peak_bytes / 2**20, "measured_mb": measured / 2**20,
                               "ratio": estimate.peak_bytes / measured, "stage": estimate.stage},
    }
    summary = summarise(cfg, timing, memory, sweep, model)
    summary["benchmark_seconds"] = time.perf_counter() - started
    table = markdown(summary)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
