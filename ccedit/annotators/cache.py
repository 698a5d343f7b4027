"""An on-disk cache of structure maps, so that re-editing a clip with new prompts skips depth estimation.

Entries are safetensors files at `<root>/<annotator name>/<key>.safetensors`, where the key is a SHA-256 of:
- the frames themselves (a SHA-1 of the uint8 array and its shape). The frames arrive already decoded, subsampled
  and resized, so hashing them is exact: a different fps, size or crop is a different clip, and a re-encoded or
  renamed file with identical frames is the same one. Hashing ~20 MB of frames costs tens of milliseconds;
- the annotator's `cache_key()` (its name, model and weights, thresholds, dtype...).

Maps are stored in their held form (`annotators.maps.hold`: uint8, what an edit holds and the networks receive
divided by 255), with a single channel when the three channels are equal, which is the case for every built-in
annotator. `get_or_compute` returns held maps on a hit and on a miss alike, so a run gives the same result with a
cold cache, a warm one or none (`held_maps`, the same conversion, serves a run without a cache).

The cache can only cost time, never correctness or the run:
- each entry records a SHA-256 of its map bytes, and a read checks it, the dtype and the shape; an entry failing
  any check (or one that is not a file) is ignored with a warning and recomputed;
- any I/O error (a read-only or full disk) is a warning, and the maps are computed as without a cache; a failed
  write leaves nothing behind;
- with `max_bytes`, the least recently used entries (by modification time, refreshed on every hit) are deleted
  after each write until the cache fits;
- entries are written through `io.atomic.atomic_path`, whose temporary is locked while it is written: every lookup
  first deletes the temporaries of writers that died (unlocked, older than a minute), so a killed run's partial
  entry goes on the next run. Temporaries of the older naming (`.<key>.tmp-*.safetensors`) go after an hour.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ccedit.annotators.base import Annotator, check_frames
from ccedit.annotators.maps import HELD_DTYPE, held_maps
from ccedit.errors import is_out_of_memory, out_of_memory
from ccedit.io.atomic import atomic_path, clean_stale_temporaries

logger = logging.getLogger(__name__)

# "2": entries carry the checksum of their maps; "3": the maps are held (uint8), not float16. Older entries are
# recomputed.
CACHE_FORMAT_VERSION = "3"
STORED_DTYPE = HELD_DTYPE
ENTRY_SUFFIX = ".safetensors"
# Earlier versions wrote an entry as `.<key>.tmp-<random>.safetensors` without a lock; a file of that name is a
# leftover of a killed run once it is older than any write could take.
_TEMPORARY_NAME = re.compile(r"^\.[0-9a-f]{64}\.tmp-[A-Za-z0-9_]+\.safetensors$")
STALE_TEMPORARY_SECONDS = 3600


class StructureCache:
    """Structure maps on disk, keyed by the frames and the annotator's settings.

    Args:
        root (`str` or `os.PathLike`): The cache folder; created on the first write.
        max_bytes (`int`, *optional*):
            Keep the entries' total size at most this many bytes by deleting the least recently used ones after
            each write; unbounded when not given. An entry larger than the limit is not stored.

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

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None):
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"`max_bytes` must be 0 or more, got {max_bytes}")
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes

    def key(self, frames: np.ndarray, annotator: Annotator) -> str:
        """The hex key of the maps of `frames` under `annotator`."""
        frames_digest = hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest()
        identity = {"frames": frames_digest, "shape": list(frames.shape), "annotator": annotator.cache_key()}
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, frames: np.ndarray, annotator: Annotator) -> Path:
        """Where the maps of `frames` under `annotator` are (or would be) stored."""
        folder = annotator.name or type(annotator).__name__
        return self.root / folder / f"{self.key(frames, annotator)}{ENTRY_SUFFIX}"

    def get_or_compute(self, frames: np.ndarray, annotator: Annotator) -> torch.Tensor:
        """Return the cached maps of `frames`, or compute them with `annotator` and store them.

        Args:
            frames (`np.ndarray` of shape `(frames, height, width, 3)`, `uint8`): The clip, RGB.
            annotator (`Annotator`): Computes the maps on a miss; its `cache_key()` is part of the key.

        Returns:
            `torch.Tensor` of shape `(frames, 3, height, width)`: the held maps (`uint8`, value = level / 255).
        """
        check_frames(frames)
        path = self.path(frames, annotator)
        clean_stale_temporaries(path.parent)  # what killed writers left, before anything else is written
        expected_shape = (frames.shape[0], 3, *frames.shape[1:3])
        if os.path.lexists(path):
            maps = self._read(path, expected_shape)
            if maps is not None:
                logger.info("structure maps from cache: %s", path)
                _touch(path)
                return maps

        maps = held_maps(annotator, frames)
        stored = (maps[:, :1] if bool((maps == maps[:, :1]).all()) else maps).contiguous()
        metadata = {
            "format": CACHE_FORMAT_VERSION,
            "annotator": json.dumps(annotator.cache_key(), sort_keys=True, default=str),
            "frames_shape": json.dumps(list(frames.shape)),
            "sha256": _digest(stored),
        }
        if self._write(path, stored, metadata):
            logger.info("structure maps cached: %s", path)
            self._tidy(keep=path)
        return maps

    def _read(self, path: Path, expected_shape: tuple[int, ...]) -> torch.Tensor | None:
        """Load and check an entry; `None` (and a warning) when it fails any check, so that it is recomputed."""
        if not path.is_file():
            logger.warning("ignoring structure cache entry %s: it is not a file; delete it to free its name", path)
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                entry = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        except (OSError, SafetensorError, ValueError, RuntimeError, MemoryError) as error:
            if is_out_of_memory(error):  # the entry is fine; the maps of this many frames do not fit
                raise out_of_memory(f"reading the structure maps {path}", "edit fewer frames (video.num_frames, "
                                    "video.fps) or at a smaller size (video.height, video.width)", error) from None
            logger.warning("ignoring unreadable structure cache entry %s (%s); recomputing", path, error)
            return None
        problem = _entry_problem(entry, metadata, expected_shape)
        if problem is not None:
            logger.warning("ignoring structure cache entry %s: %s; recomputing", path, problem)
            return None
        return entry["maps"].expand(-1, 3, -1, -1).contiguous()

    def _write(self, path: Path, stored: torch.Tensor, metadata: dict[str, str]) -> bool:
        """Store an entry atomically; whether it was stored. I/O errors are warnings: the run goes on uncached."""
        size = stored.numel() * stored.element_size()
        if self.max_bytes is not None and size > self.max_bytes:
            logger.info("not caching %s: %d bytes exceed the cache limit of %d", path, size, self.max_bytes)
            return False
        try:
            # A locked temporary (io.atomic), so the next run can tell a killed writer's leftover and delete it.
            with atomic_path(path) as tmp:
                save_file({"maps": stored}, str(tmp), metadata=metadata)
            return True
        except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
            logger.warning("could not write structure cache entry %s (%s); continuing without caching it", path, error)
            return False

    def _tidy(self, keep: Path) -> None:
        """Delete stale temporaries, then the least recently used entries until the cache fits `max_bytes`."""
        entries = []
        now = time.time()
        try:
            files = [p for folder in self.root.iterdir() if folder.is_dir() for p in folder.iterdir()]
        except OSError as error:
            logger.warning("could not list the structure cache %s (%s)", self.root, error)
            return
        for path in files:
            try:
                stat = path.lstat()
            except OSError:
                continue  # deleted meanwhile, e.g. by a concurrent run
            if _TEMPORARY_NAME.match(path.name):
                if now - stat.st_mtime > STALE_TEMPORARY_SECONDS:
                    logger.info("deleting a temporary left by an interrupted run: %s", path)
                    _remove(path)
            elif path.suffix == ENTRY_SUFFIX and not path.name.startswith(".") and path.is_file():  # not temporaries
                entries.append((stat.st_mtime, stat.st_size, path))
        if self.max_bytes is None:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            logger.info("structure cache over %d bytes: deleting the least used entry %s", self.max_bytes, path)
            if _remove(path):
                total -= size


def _entry_problem(entry: dict[str, torch.Tensor], metadata: dict[str, str], expected_shape: tuple) -> str | None:
    """What is wrong with a loaded entry, or `None` when it can be trusted."""
    if metadata.get("format") != CACHE_FORMAT_VERSION:
        return f"written in cache format {metadata.get('format')!r}, not {CACHE_FORMAT_VERSION!r}"
    maps = entry.get("maps")
    if maps is None or set(entry) != {"maps"}:
        return f"it holds {sorted(entry)} instead of the maps alone"
    if maps.dtype != STORED_DTYPE:
        return f"its maps are {maps.dtype}, not {STORED_DTYPE}"
    frames, _, height, width = expected_shape
    if maps.ndim != 4 or maps.shape[1] not in (1, 3) or (maps.shape[0], *maps.shape[2:]) != (frames, height, width):
        return f"its maps have shape {tuple(maps.shape)}, expected ({frames}, 1 or 3, {height}, {width})"
    if _digest(maps) != metadata.get("sha256"):
        return "its checksum does not match (the file was altered or damaged)"
    return None


def _digest(maps: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes."""
    return hashlib.sha256(maps.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _touch(path: Path) -> None:
    """Mark an entry as just used, for least-recently-used eviction (best effort: a read-only cache still hits)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _remove(path: Path) -> bool:
    """Delete a file; whether it is gone. Failures are logged, never raised."""
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError as error:
        logger.warning("could not delete %s from the structure cache (%s)", path, error)
        return False
