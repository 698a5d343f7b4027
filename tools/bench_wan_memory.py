"""Peak memory of a long Wan-VACE edit against a short one: the windows in latent time keep it flat.

Runs real `wan-vace-tiny` edits through the Python API, each in a fresh process (a process's high-water mark only
grows): a short clip (34 frames) and a long one (300 frames), at 64x64 by default, in windows of the native 81
frames. Each run prints its peak memory, the process's RSS high-water mark on the CPU or `max_memory_allocated` on
CUDA, beside the memory model's estimate of the same edit (`kinds.estimate_memory`); then `peak_ratio =
peak(long) / peak(short)`, which should stay within 1.3, and on the CPU `edit_ratio`, the same for what each edit
adds to the process's RSS after loading (the libraries alone hold most of a tiny edit's RSS).

    python tools/bench_wan_memory.py [--frames 34 300] [--size 64] [--steps 2] [--device auto] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "wan-vace-tiny"
TARGET_RATIO = 1.3
WINDOW = 81  # Wan's native length, in pixel frames

# One edit in a fresh process; prints a JSON line: frames, device, peak bytes, estimated peak bytes.
ONE_EDIT = """
import json, resource, sys
import numpy as np, torch
from ccedit.kinds import estimate_memory, kind_for, load_pipeline
frames, size, steps, device, window = json.loads(sys.argv[1])
kind = kind_for({model!r})
pipe = load_pipeline({model!r}, device=device, scheduler=kind.conventions.scheduler)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux: the libraries and model
rng = np.random.default_rng(0)
video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
maps = torch.from_numpy(rng.integers(0, 256, (frames, 3, size, size), dtype=np.uint8))  # held, as an edit holds them
pipe("a", video, [maps], num_inference_steps=steps, window_length=window, progress=False)
on = pipe._execution_device
if on.type == "cuda":
    peak = torch.cuda.max_memory_allocated(on)
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
estimate = estimate_memory({model!r}, height=size, width=size, num_frames=frames, window_length=window,
                           dtype=pipe.main_dtype, device_type=on.type)
print(json.dumps(dict(frames=frames, device=on.type, peak=peak, loaded=loaded if on.type == "cpu" else 0,
                      estimate=estimate.peak_bytes)))
""".format(model=MODEL)


def run_edit(frames: int, size: int, steps: int, device: str) -> dict:
    """One edit of `frames` frames in a fresh process: its peak and the estimate."""
    result = subprocess.run([sys.executable, "-c", ONE_EDIT, json.dumps([frames, size, steps, device, WINDOW])],
                            cwd=REPO, capture_output=True, text=True, env=None)
    if result.returncode != 0:
        sys.exit(f"the {frames}-frame edit failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs=2, default=[34, 300], metavar=("SHORT", "LONG"))
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (a multiple of 16)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    runs = [run_edit(frames, args.size, args.steps, args.device) for frames in args.frames]
    what = "max_memory_allocated" if runs[0]["device"] == "cuda" else "RSS high-water mark"
    for run in runs:
        print(f"{run['frames']:4d} frames at {args.size}x{args.size} on {run['device']}: peak {run['peak'] / 2**20:,.1f} "
              f"MiB ({what}); the memory model's estimate {run['estimate'] / 2**20:,.1f} MiB")
    ratio = runs[1]["peak"] / runs[0]["peak"]
    print(f"peak_ratio = {ratio:.3f} (target: within {TARGET_RATIO})")
    # On the CPU the RSS holds the libraries too: the edit's own part is what it adds to the process after loading.
    edit_ratio = (runs[1]["peak"] - runs[1]["loaded"]) / max(1, runs[0]["peak"] - runs[0]["loaded"])
    if runs[0]["device"] == "cpu":
        print(f"edit_ratio = {edit_ratio:.3f} (the RSS each edit adds after loading: "
              f"{(runs[0]['peak'] - runs[0]['loaded']) / 2**20:,.1f} and {(runs[1]['peak'] - runs[1]['loaded']) / 2**20:,.1f} MiB)")
    results = {"size": args.size, "steps": args.steps, "window": WINDOW, "runs": runs, "peak_ratio": ratio,
               "edit_ratio": edit_ratio}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
