"""A small synthetic video set: coloured shapes moving over plain backgrounds, with captions that say so."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np

from ..io import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40),
           "white": (240, 240, 240), "purple": (150, 60, 200)}
SHAPES = ("circle", "square")
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def moving_shape(rng: np.random.Generator, num_frames: int, size: int) -> tuple[np.ndarray, str]:
    """One clip `(frames, size, size, 3)` uint8 and its caption."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    names = list(COLOURS)
    colour, background = rng.choice(len(names), size=2, replace=False)
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    radius = int(rng.integers(size // 8, size // 4))
    x0, y0 = (int(v) for v in rng.integers(radius, size - radius, size=2))
    speed = (size - 2 * radius) / max(num_frames - 1, 1)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        # Bounce off the borders so the shape stays whole.
        x = _bounce(x0 + dx * speed * t, radius, size - radius)
        y = _bounce(y0 + dy * speed * t, radius, size - radius)
        frame = np.full((size, size, 3), COLOURS[names[background]], np.uint8)
        if shape == "circle":
            cv2.circle(frame, (int(x), int(y)), radius, COLOURS[names[colour]], -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(frame, (int(x) - radius, int(y) - radius), (int(x) + radius, int(y) + radius),
                          COLOURS[names[colour]], -1)
        frames[t] = frame
    return frames, f"a {names[colour]} {shape} moving {direction} on a {names[background]} background"


def _bounce(value: float, low: float, high: float) -> float:
    span = high - low
    offset = (value - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def build_synthetic_set(folder: str | os.PathLike, num_videos: int, num_frames: int = 24, size: int = 64,
                        fps: float = 8.0, seed: int = 0) -> Path:
    """Write `num_videos` mp4 clips and `captions.csv` (`path,caption`) into `folder`; returns the CSV path.

    The set depends only on its arguments; an existing complete set is reused.
    """
    folder = Path(folder)
    captions = folder / "captions.csv"
    if captions.is_file():
        with captions.open(newline="") as f:
            if sum(1 for _ in csv.DictReader(f)) == num_videos:
                return captions
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_videos):
        frames, caption = moving_shape(rng, num_frames, size)
        name = f"shapes_{i:04d}.mp4"
        write_video(folder / name, frames, fps)
        rows.append({"path": name, "caption": caption})
    tmp = folder / ".captions.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, captions)  # the CSV last: its presence marks a complete set
    return captions
