"""Whole-clip editing: peak memory and time per frame of a long clip against a short one, and seams between windows.

Part 1 runs `ccedit edit` on the tiny model as separate processes, on a synthetic clip (a square crossing a
gradient, at 480x854 so that decoding is chunked too): all of its frames (300 by default, no `--frames`), then its
first 34 frames, with the same window. It prints each run's max RSS (the operating system's accounting of the
finished process) and wall time, and the two ratios the long-video work promises to keep low:
`peak_ratio = rss(long) / rss(short)` and `time_per_frame_ratio = (wall(long) / frames) / (wall(short) / 34)`.

Part 2 measures seams in process: the mean absolute difference between consecutive output frames across the
frames where a window starts or ends, divided by the same mean within windows (1.0: no visible seam), for
independent initial noise, FreeNoise-style repeated noise, and windows without overlap.

    python tools/benchmark_long.py [--frames 300] [--short 34] [--window 16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synthetic_clip(path: Path, frames: int, size=(480, 854), fps: float = 30.0) -> Path:
    from ccedit.io import write_video

    h, w = size
    video = np.zeros((frames, h, w, 3), dtype=np.uint8)
    video[..., 2] = np.linspace(0, 255, w, dtype=np.uint8)
    video[..., 1] = np.linspace(0, 180, h, dtype=np.uint8)[:, None]
    side = h // 5
    for t in range(frames):
        x = int((t * 7) % (w - side))
        video[t, h // 3 : h // 3 + side, x : x + side] = (255, 200, 0)
    write_video(path, video, fps)
    return path


def run_edit(clip: Path, out: Path, window: int, frames: int | None, cache: Path) -> dict:
    """One `ccedit edit` process: its max RSS (bytes) and wall time, from the OS's accounting of the child."""
    args = [sys.executable, "-m", "ccedit.cli", "edit", str(clip), "--prompt", "a watercolor painting", "-o", str(out),
            "--model", "tiny", "--window", str(window), f"structure.cache_dir={cache}", "--overwrite"]
    if frames is not None:
        args += ["--frames", str(frames)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"ccedit edit failed:\n{stderr}")
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    return {"frames": sidecar["video"]["num_frames"], "max_rss_bytes": usage.ru_maxrss * 1024, "wall_seconds": wall,
            "windows": sidecar["windows"]["per_pass"]}


def seam_ratio(frames: np.ndarray, windows) -> float:
    """Mean |frame[t+1] - frame[t]| where a window starts or ends, over the same mean elsewhere."""
    diffs = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))  # diffs[t]: t -> t+1
    edges = set()
    for window in windows:
        first, last = min(window.frames), max(window.frames)
        if first > 0:
            edges.add(first - 1)
        if last < len(frames) - 1:
            edges.add(last)
    inside = [t for t in range(len(diffs)) if t not in edges]
    return float(diffs[sorted(edges)].mean() / diffs[inside].mean()) if edges and inside else 1.0


def seams(clip: Path, frames: int, window: int) -> dict:
    import torch

    from ccedit.annotators import build_annotator
    from ccedit.io import fit_frames, read_video
    from ccedit.kinds import load_pipeline
    from ccedit.pipelines.windows import plan_windows

    video = fit_frames(read_video(clip, num_frames=frames).frames, (128, 224))[0]
    maps = build_annotator("canny")(video)
    pipe = load_pipeline("tiny")
    results = {}
    for name, overlap, noise in [("independent", window // 4, "independent"), ("repeat", window // 4, "repeat"),
                                 ("no_overlap", 0, "independent")]:
        out = pipe("a watercolor painting", video, [maps], num_inference_steps=4, window_length=window,
                   window_overlap=overlap, window_noise=noise, generator=torch.Generator().manual_seed(0),
                   progress=False).frames[0]
        results[name] = seam_ratio(out, plan_windows(frames, window, overlap))
    results["source"] = seam_ratio(video, plan_windows(frames, window, window // 4))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames of the long clip")
    parser.add_argument("--short", type=int, default=34, help="frames of the short run")
    parser.add_argument("--window", type=int, default=16, help="frames per window (the tiny model's native length)")
    parser.add_argument("--seam-frames", type=int, default=64, help="frames of the seam measurement")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = synthetic_clip(tmp / "long.mp4", args.frames)
        cache = tmp / "cache"
        short = run_edit(clip, tmp / "short.mp4", args.window, args.short, cache)
        long = run_edit(clip, tmp / "long_out.mp4", args.window, None, cache)
        if long["frames"] != args.frames:
            raise SystemExit(f"the long edit wrote {long['frames']} frames, not {args.frames}")
        seam = seams(clip, args.seam_frames, args.window)

    results = {
        "short": short,
        "long": long,
        "peak_ratio": long["max_rss_bytes"] / short["max_rss_bytes"],
        "time_per_frame_ratio": (long["wall_seconds"] / long["frames"]) / (short["wall_seconds"] / short["frames"]),
        "seam_ratio": seam,
    }
    for name in ("short", "long"):
        r = results[name]
        print(f"{name:5s}: {r['frames']:4d} frames, {r['windows']} windows, max RSS {r['max_rss_bytes'] / 2**20:7.1f} MiB, "
              f"{r['wall_seconds']:6.1f} s ({r['wall_seconds'] / r['frames']:.3f} s/frame)")
    print(f"peak_ratio={results['peak_ratio']:.3f} time_per_frame_ratio={results['time_per_frame_ratio']:.3f}")
    print("seam ratio (1.0 = no seam): " + ", ".join(f"{k}={v:.3f}" for k, v in seam.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
