"""Jobs files of tiny edits (8 frames, 64x64, 2 steps) and the commands that run them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.conftest import REPO, VIDEOS

TINY = "video.num_frames=8 video.height=64 video.width=64 sampling.num_inference_steps=2"
# One thread in every process, so one- and two-process runs add floats in the same order.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# `--multi_gpu` selects accelerate's torchrun launcher, which also starts CPU processes (they join over gloo).
ACCELERATE = ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "ccedit"]


def six_jobs(folder: Path) -> Path:
    """Six jobs over both clips, with seeds, an automatic keyframe and a second scheduler (a second model key)."""
    rows = [
        {"clip": str(VIDEOS / "kitten.mp4"), "prompt": "a dog", "keyframes": "", "output": "dog.mp4", "settings": TINY},
        {"clip": str(VIDEOS / "kitten.mp4"), "prompt": "a fox", "keyframes": "auto@5", "output": "fox.mp4",
         "settings": f"{TINY} sampling.seed=1"},
        {"clip": str(VIDEOS / "sailboat.mp4"), "prompt": "a ship", "keyframes": "", "output": "ship.mp4",
         "settings": f"{TINY} sampling.scheduler=ddim"},
        {"clip": str(VIDEOS / "kitten.mp4"), "prompt": "a tiger", "keyframes": "", "output": "tiger.mp4",
         "settings": f"{TINY} sampling.seed=2"},
        {"clip": str(VIDEOS / "sailboat.mp4"), "prompt": "a raft", "keyframes": "", "output": "raft.mp4",
         "settings": f"{TINY} sampling.scheduler=ddim sampling.seed=3"},
        {"clip": str(VIDEOS / "sailboat.mp4"), "prompt": "a canoe", "keyframes": "", "output": "canoe.mp4",
         "settings": f"{TINY} sampling.seed=4"},
    ]
    return write_csv(folder / "jobs.csv", rows)


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip", "prompt", "keyframes", "output", "settings"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def batch_command(jobs: Path, work: Path, *extra: str, processes: int = 1) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "ccedit", "batch", str(jobs), "--work-dir", str(work), "--no-progress", *extra]
    return [shutil.which("accelerate"), *ACCELERATE, "batch", str(jobs), "--work-dir", str(work), "--no-progress",
            *extra]


# `python -c HANG_IN_EDIT MARKER N ARGS...` runs `ccedit ARGS...`, and in the first denoising step of its N-th edit
# writes that edit's output path to MARKER and waits to be killed.
HANG_IN_EDIT = """
import sys, time
from pathlib import Path
import ccedit.editing as editing

marker, nth, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
edit = editing.EditSession.edit
started = []

def edit_then_hang_in_the_nth(self, job, *, callback_on_step_end=None):
    started.append(job.output)
    def step_end(pipe, step, timestep, tensors):
        if len(started) == nth:
            marker.write_text(job.output)
            time.sleep(600)
        return callback_on_step_end(pipe, step, timestep, tensors)
    return edit(self, job, callback_on_step_end=step_end)

editing.EditSession.edit = edit_then_hang_in_the_nth
from ccedit.cli import main
sys.exit(main(argv))
"""


def hanging_in_edit(marker: Path, nth: int, args: list[str]) -> list[str]:
    """The command `ccedit ARGS...` that hangs mid-denoising of its `nth` edit, once it has written `marker`."""
    return [sys.executable, "-c", HANG_IN_EDIT, str(marker), str(nth), *args]


def wait_for_marker(process: subprocess.Popen, marker: Path, log: Path, seconds: float = 300) -> str:
    """Wait until `process` (its output going to `log`) writes `marker`, which it must do before it ends; returns
    the marker's text."""
    deadline = time.monotonic() + seconds
    while not marker.exists():
        assert process.poll() is None, f"ended (exit {process.returncode}) before it hung: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"did not reach its hanging step in {seconds:.0f} s"
        time.sleep(0.2)
    return marker.read_text()


def run(command: list[str], expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def frames(video: Path) -> np.ndarray:
    from ccedit.io import read_video

    return read_video(video).frames
