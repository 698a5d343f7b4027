"""StructureCache: a hit skips the annotator, any change of frames or settings misses, writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.annotators import Annotator, CannyEdges, StructureCache


class CountingAnnotator(Annotator):
    """Maps = a per-channel scaled copy of the frames; counts how often it runs."""

    name = "counting"

    def __init__(self, gain: float = 1.0, is_gray: bool = False):
        super().__init__(batch_size=2)
        self.gain = gain
        self.is_gray = is_gray
        self.calls = 0

    def __call__(self, frames):
        self.calls += 1
        return super().__call__(frames)

    def _annotate_batch(self, frames):
        pixels = self._frames_to_tensor(frames) * self.gain
        return pixels.mean(dim=1, keepdim=True) if self.is_gray else pixels

    def _settings(self):
        return {"gain": self.gain, "is_gray": self.is_gray}


def test_second_call_reads_the_cache(tmp_path, clip, check_maps):
    cache, annotator = StructureCache(tmp_path), CountingAnnotator()
    first = cache.get_or_compute(clip, annotator)
    second = cache.get_or_compute(clip, annotator)
    assert annotator.calls == 1
    check_maps(second, clip)
    assert torch.equal(first, second)  # the miss returns the stored (float16-rounded) maps too
    torch.testing.assert_close(first, annotator(clip), atol=5e-4, rtol=0)

    # A fresh cache object on the same folder, and an equal but separate annotator, still hit.
    other = CountingAnnotator()
    assert torch.equal(StructureCache(tmp_path).get_or_compute(clip.copy(), other), first)
    assert other.calls == 0


def test_changed_frames_or_settings_miss(tmp_path, clip):
    cache, annotator = StructureCache(tmp_path), CountingAnnotator()
    cache.get_or_compute(clip, annotator)

    changed = clip.copy()
    changed[1, 0, 0, 0] ^= 1
    cache.get_or_compute(changed, annotator)
    cache.get_or_compute(clip[:2], annotator)
    assert annotator.calls == 3

    other = CountingAnnotator(gain=0.5)
    cache.get_or_compute(clip, other)
    assert other.calls == 1
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_canny_threshold_change_misses(tmp_path, clip):
    cache = StructureCache(tmp_path)
    assert cache.key(clip, CannyEdges()) == cache.key(clip, CannyEdges(batch_size=1))
    assert cache.key(clip, CannyEdges()) != cache.key(clip, CannyEdges(low_threshold=10))


def test_gray_maps_are_stored_once_and_expanded(tmp_path, clip, check_maps):
    from safetensors.torch import load_file

    cache = StructureCache(tmp_path)
    maps = cache.get_or_compute(clip, CountingAnnotator(is_gray=True))
    check_maps(maps, clip)
    (path,) = tmp_path.rglob("*.safetensors")
    stored = load_file(str(path))["maps"]
    assert stored.shape == (3, 1, 40, 56) and stored.dtype == torch.float16
    assert torch.equal(cache.get_or_compute(clip, CountingAnnotator(is_gray=True)), maps)


def test_unreadable_entry_is_recomputed(tmp_path, clip):
    cache, annotator = StructureCache(tmp_path), CountingAnnotator()
    path = cache.path(clip, annotator)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    maps = cache.get_or_compute(clip, annotator)
    assert annotator.calls == 1
    assert torch.equal(cache.get_or_compute(clip, annotator), maps)
    assert annotator.calls == 1
    # Only the entry itself is left: the atomic write cleaned up its temporary file.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_annotator_leaves_no_entry(tmp_path, clip):
    class Failing(CountingAnnotator):
        def _annotate_batch(self, frames):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        StructureCache(tmp_path).get_or_compute(clip, Failing())
    assert not list(tmp_path.rglob("*.safetensors"))


def test_bad_frames_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        StructureCache(tmp_path).get_or_compute(np.zeros((1, 8, 8, 3), np.float32), CountingAnnotator())
