"""Training data: a folder of videos with a captions CSV, read as fixed-length windows with their structure maps.

Every random choice of a sample (its video, start frame, and the seed the training step draws its noise from)
follows from the run's seed and the sample's global position in the stream, never from a process's random state.
So a resumed run continues exactly, DataLoader workers change nothing, and the samples of a global batch are the
same whether one process or several read them.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..annotators.maps import as_unit, held_maps
from ..errors import UserError
from ..io import fit_frames, read_video, video_info
from .config import TrainDataConfig

logger = logging.getLogger(__name__)

# Column pairs accepted for (video, caption): ccedit's own, then WebVid's (`videoid` names `<videoid>.mp4`).
CAPTION_COLUMNS = (("path", "caption"), ("videoid", "name"))
WEBVID_SUFFIX = ".mp4"


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    caption: str
    num_frames: int
    fps: float


@dataclass
class DataReport:
    """What was found: usable entries, and those skipped by reason."""

    entries: list[VideoEntry]
    missing: int = 0
    unreadable: int = 0
    too_short: int = 0

    @property
    def skipped(self) -> int:
        return self.missing + self.unreadable + self.too_short


def read_captions(csv_path: Path, videos: Path) -> list[tuple[Path, str]]:
    """The `(video path, caption)` rows of a captions CSV; paths are relative to `videos`."""
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        columns = next(((p, c) for p, c in CAPTION_COLUMNS if p in fields and c in fields), None)
        if columns is None:
            raise UserError(f"{csv_path} has columns {fields}: it needs `path,caption` (or WebVid's `videoid,name`)")
        rows = []
        for row in reader:
            name = (row[columns[0]] or "").strip()
            if not name:
                continue
            if columns[0] == "videoid" and not Path(name).suffix:
                name += WEBVID_SUFFIX
            rows.append((videos / name, (row[columns[1]] or "").strip()))
    return rows


def window_span(fps: float, config: TrainDataConfig) -> tuple[int, int]:
    """`(gap, span)`: the source-frame step for the target fps (`read_video`'s rule) and the frames a window covers."""
    gap = 1 if config.fps is None else max(1, int(np.round(fps / config.fps)))
    return gap, gap * (config.num_frames - 1) + 1


def scan_videos(config: TrainDataConfig) -> DataReport:
    """Check the data folder and captions once, before any model loads; skip (and count) what cannot be used."""
    if config.videos is None:
        raise UserError("no training data: set data.videos to a folder of videos (or data.synthetic to a count)")
    videos = Path(config.videos).expanduser()
    if not videos.is_dir():
        raise UserError(f"data.videos is not a folder: {videos}")
    csv_path = Path(config.captions).expanduser() if config.captions else videos / "captions.csv"
    if not csv_path.is_file():
        raise UserError(f"captions file not found: {csv_path}; write one with `path,caption` rows or set data.captions")
    rows = read_captions(csv_path, videos)
    if not rows:
        raise UserError(f"{csv_path} lists no videos: add `path,caption` rows for the videos in {videos}")
    report = DataReport(entries=[])
    for path, caption in rows:
        if not path.exists():
            report.missing += 1
            continue
        try:
            num_frames, fps, _ = video_info(path)
        except Exception:  # any decoder failure means the same here: this video cannot be used
            report.unreadable += 1
            continue
        if window_span(fps, config)[1] > num_frames:
            report.too_short += 1
            continue
        report.entries.append(VideoEntry(path, caption, num_frames, fps))
    if report.skipped:
        logger.warning("%s: skipped %d of %d videos (%d missing, %d unreadable, %d shorter than a window)", csv_path,
                       report.skipped, len(rows), report.missing, report.unreadable, report.too_short)
    if not report.entries:
        raise UserError(
            f"none of the {len(rows)} videos listed in {csv_path} can be used ({report.missing} missing, "
            f"{report.unreadable} unreadable, {report.too_short} shorter than {config.num_frames} frames at "
            f"{config.fps} fps): check the paths, which are relative to {videos}"
        )
    return report


def sample_rng(seed: int, position: int) -> np.random.Generator:
    """The random stream of the sample at global `position` of a run with `seed`."""
    return np.random.default_rng([seed, position])


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of optimisation step `step` (choices shared by the whole global batch)."""
    return np.random.default_rng([seed, step, 2])


class VideoWindows(Dataset):
    r"""Windows of `num_frames` frames at the target fps from a random start, resized and centre-cropped.

    Indexed by global stream position: position p is video `perm_e[p % n]` of epoch `e = p // n`, where `perm_e`
    is a permutation drawn from `(seed, e)`. A video that fails to decode is skipped (the next one of the epoch's
    order is used) and counted in the sample.

    Returns a dict: `pixels` float `(3, frames, height, width)` in `[-1, 1]`, `structure` float `(3, frames,
    height, width)` in `[0, 1]`, `caption`, `seed` (for the step's noise) and `skipped`.
    """

    def __init__(self, entries: list[VideoEntry], config: TrainDataConfig, seed: int, annotator=None, cache=None):
        self.entries = entries
        self.config = config
        self.seed = seed
        self.annotator = annotator
        self.cache = cache

    def __len__(self) -> int:
        return len(self.entries)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.entries))

    def __getitem__(self, position: int) -> dict:
        n = len(self.entries)
        epoch, offset = divmod(int(position), n)
        order = self._order(epoch)
        rng = sample_rng(self.seed, int(position))
        for skipped in range(n):
            entry = self.entries[order[(offset + skipped) % n]]
            try:
                frames = self._window(entry, rng)
                break
            except Exception as e:  # a corrupt file must not stop a long run: skip it, count it
                logger.warning("skipping unreadable video %s: %s", entry.path, str(e).splitlines()[0] if str(e) else e)
        else:
            raise RuntimeError("no video of the training set could be decoded")
        structure = self._structure(frames)
        pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # f h w c -> c f h w
        return {
            "pixels": pixels,
            "structure": structure.transpose(0, 1).contiguous(),  # f c h w -> c f h w
            "caption": entry.caption,
            "seed": int(rng.integers(2**62)),
            "skipped": skipped,
        }

    def _window(self, entry: VideoEntry, rng: np.random.Generator) -> np.ndarray:
        gap, span = window_span(entry.fps, self.config)
        first = int(rng.integers(0, entry.num_frames - span + 1))
        clip = read_video(entry.path, num_frames=self.config.num_frames, fps=self.config.fps,
                          start=first / entry.fps)
        frames, _ = fit_frames(clip.frames, (self.config.height, self.config.width), "crop")
        return frames

    def _structure(self, frames: np.ndarray) -> torch.Tensor:
        if self.annotator is None:
            return torch.zeros(frames.shape[0], 3, *frames.shape[1:3])
        # Held (8-bit) maps whether cached or not: the levels an edit gives the ControlNet.
        held = self.cache.get_or_compute(frames, self.annotator) if self.cache is not None else held_maps(
            self.annotator, frames)
        return as_unit(held)


class StreamPositions(Sampler[int]):
    """This process's global stream positions, from `start` on: per-process batches taken in turn, as accelerate's
    sharding does, so `processes` x `batch_size` consecutive positions form one global batch."""

    def __init__(self, batch_size: int, process_index: int, num_processes: int, start: int = 0):
        self.batch_size = batch_size
        self.process_index = process_index
        self.num_processes = num_processes
        self.start = start

    def __iter__(self):
        global_batch = self.batch_size * self.num_processes
        batch = self.start // global_batch
        while True:
            first = batch * global_batch + self.process_index * self.batch_size
            yield from range(first, first + self.batch_size)
            batch += 1


def collate(samples: list[dict]) -> dict:
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "structure": torch.stack([s["structure"] for s in samples]),
        "captions": [s["caption"] for s in samples],
        "seeds": [s["seed"] for s in samples],
        "skipped": sum(s["skipped"] for s in samples),
    }


def worker_count(requested: int) -> int:
    return max(0, min(requested, os.cpu_count() or 1))
