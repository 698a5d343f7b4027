"""Jobs files of tiny edits (8 frames, 64x64, 2 steps) and the commands that run them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
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


def run(command: list[str], expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def frames(video: Path) -> np.ndarray:
    from ccedit.io import read_video

    return read_video(video).frames
