"""An on-disk cache of structure maps, so that re-editing a clip with new prompts skips depth estimation.

Entries are safetensors files at `<root>/<annotator name>/<key>.safetensors`, where the key is a SHA-256 of:
- the frames themselves (a SHA-1 of the uint8 array and its shape). The frames arrive already decoded, subsampled
  and resized, so hashing them is exact: a different fps, size or crop is a different clip, and a re-encoded or
  renamed file with identical frames is the same one. Hashing ~20 MB of frames costs tens of milliseconds;
- the annotator's `cache_key()` (its name, model and weights, thresholds, dtype...).

Maps are stored as float16 (error below 2.5e-4 on `[0, 1]`, against 2e-3 for 8-bit quantisation), with a single
channel when the three channels are equal, which is the case for every built-in annotator. `get_or_compute`
returns the float16-rounded maps on a miss as well, so a run gives the same result with a cold or a warm cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ccedit.annotators.base import Annotator, check_frames
from ccedit.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = "1"


class StructureCache:
    """Structure maps on disk, keyed by the frames and the annotator's settings.

    Args:
        root (`str` or `os.PathLike`): The cache folder; created on the first write.

    Example:

    ```py
    >>> import tempfile
    >>> import numpy as np
    >>> from ccedit.annotators import StructureCache, build_annotator
    >>> cache = StructureCache(tempfile.mkdtemp())
    >>> frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    >>> cache.get_or_compute(frames, build_annotator("canny")).shape
    torch.Size([2, 3, 32, 32])

    ```
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def key(self, frames: np.ndarray, annotator: Annotator) -> str:
        """The hex key of the maps of `frames` under `annotator`."""
        frames_digest = hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest()
        identity = {"frames": frames_digest, "shape": list(frames.shape), "annotator": annotator.cache_key()}
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, frames: np.ndarray, annotator: Annotator) -> Path:
        """Where the maps of `frames` under `annotator` are (or would be) stored."""
        folder = annotator.name or type(annotator).__name__
        return self.root / folder / f"{self.key(frames, annotator)}.safetensors"

    def get_or_compute(self, frames: np.ndarray, annotator: Annotator) -> torch.Tensor:
        """Return the cached maps of `frames`, or compute them with `annotator` and store them.

        Args:
            frames (`np.ndarray` of shape `(frames, height, width, 3)`, `uint8`): The clip, RGB.
            annotator (`Annotator`): Computes the maps on a miss; its `cache_key()` is part of the key.

        Returns:
            `torch.Tensor` of shape `(frames, 3, height, width)`, `float32`, in `[0, 1]`, float16-rounded.
        """
        check_frames(frames)
        path = self.path(frames, annotator)
        expected_shape = (frames.shape[0], 3, *frames.shape[1:3])
        if path.is_file():
            maps = self._read(path, expected_shape)
            if maps is not None:
                logger.info("structure maps from cache: %s", path)
                return maps

        maps = annotator(frames).to(torch.float16)
        stored = maps[:, :1] if bool((maps == maps[:, :1]).all()) else maps
        metadata = {
            "format": CACHE_FORMAT_VERSION,
            "annotator": json.dumps(annotator.cache_key(), sort_keys=True, default=str),
            "frames_shape": json.dumps(list(frames.shape)),
        }
        with atomic_path(path) as tmp:
            save_file({"maps": stored.contiguous()}, str(tmp), metadata=metadata)
        logger.info("structure maps cached: %s", path)
        return maps.float()

    @staticmethod
    def _read(path: Path, expected_shape: tuple[int, ...]) -> torch.Tensor | None:
        """Load an entry; `None` (and a warning) when it is unreadable or has the wrong shape, so it is recomputed."""
        try:
            maps = load_file(str(path))["maps"]
        except (OSError, SafetensorError, KeyError) as error:
            logger.warning("ignoring unreadable structure cache entry %s (%s)", path, error)
            return None
        maps = maps.float().expand(-1, 3, -1, -1)
        if tuple(maps.shape) != expected_shape:
            logger.warning("ignoring structure cache entry %s of shape %s", path, tuple(maps.shape))
            return None
        return maps.contiguous()
