"""Tracked masks cached on disk with the structure maps' cache, so a second edit of a clip skips the tracker.

`annotators.cache.StructureCache` already stores per-frame maps keyed by the frames' content and a `cache_key()`,
checks every entry (checksum, dtype, shape), writes atomically and evicts the least used. A `TrackedMaskSource`
gives it what it asks of an annotator: a `name` (the entries' folder, `masks/`), a `cache_key()` (the spec as
written, the prompt in working-size pixels with a prompt mask's digest, and the tracker's model and files) and a
call that turns frames into `(frames, 1, height, width)` float maps: the hard mask as 0 or 1. The shaping options
(dilate, feather, invert) are applied after the cache, so changing them never runs the tracker again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ccedit.annotators.cache import StructureCache
from ccedit.masks.spec import MaskSpec
from ccedit.masks.tracking import TrackPrompt, VideoTracker

# Bumped when what a tracked-mask entry holds changes, so older entries are recomputed.
MASK_FORMAT_VERSION = "1"


class TrackedMaskSource:
    """One tracking request, in the form `StructureCache` caches."""

    name = "masks"

    def __init__(self, tracker: VideoTracker, prompt: TrackPrompt, spec: MaskSpec):
        self.tracker = tracker
        self.prompt = prompt
        self.spec = spec

    def cache_key(self) -> dict[str, Any]:
        return {"name": self.name, "format": MASK_FORMAT_VERSION, "spec": self.spec.text,
                "prompt": self.prompt.record(), **self.tracker.identity()}

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.tracker.track(frames, self.prompt)).float()[:, None]


def tracked_masks(frames: np.ndarray, source: TrackedMaskSource, cache_dir) -> np.ndarray:
    """Bool masks `(frames, height, width)` from the cache under `cache_dir`, or tracked (and stored) on a miss;
    tracked without a cache when `cache_dir` is None."""
    if cache_dir is None:
        return source(frames)[:, 0].numpy() > 0.5
    held = StructureCache(cache_dir).get_or_compute(frames, source)
    return held[:, 0].numpy() > 127
