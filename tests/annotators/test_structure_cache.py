"""StructureCache: a hit skips the annotator, any change of frames or settings misses, writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.annotators import Annotator, CannyEdges, StructureCache
from ccedit.annotators.maps import as_unit, hold


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
    check_maps(as_unit(second), clip)
    assert torch.equal(first, second)  # the miss returns the stored (held) maps too
    assert torch.equal(first, hold(annotator(clip)))  # exactly the held maps of a run without a cache

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
    check_maps(as_unit(maps), clip)
    (path,) = tmp_path.rglob("*.safetensors")
    stored = load_file(str(path))["maps"]
    assert stored.shape == (3, 1, 40, 56) and stored.dtype == torch.uint8
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


# A cache that cannot hurt: damaged entries are recomputed, I/O failures only cost time, the size stays bounded.


def _cold(tmp_path, clip):
    """The maps of a run with an empty cache."""
    return StructureCache(tmp_path / "cold").get_or_compute(clip, CountingAnnotator())


def _rewrite(path, maps, **metadata_changes):
    """Replace an entry's maps, with a checksum that matches them (so only the other checks can reject it)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ccedit.annotators.cache import _digest

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file({"maps": maps.contiguous()}, str(path), metadata={**metadata, "sha256": _digest(maps), **metadata_changes})


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    for offset in (-1, -100, -1000):  # in the tensor data, which sits after the header
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _four_channels(path):
    from safetensors.torch import load_file

    maps = load_file(str(path))["maps"]
    _rewrite(path, torch.cat([maps, maps[:, :1]], dim=1))


def _wrong_frames(path):
    from safetensors.torch import load_file

    _rewrite(path, load_file(str(path))["maps"][:2])


def _float16(path):
    """An entry in the unit form an earlier cache format stored."""
    from safetensors.torch import load_file

    _rewrite(path, load_file(str(path))["maps"].half() / 255)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize(
    "damage", [_flip_bytes, _four_channels, _wrong_frames, _float16, _truncated]
)
def test_a_damaged_entry_is_recomputed_and_matches_a_cold_run(tmp_path, clip, damage, caplog):
    cache, annotator = StructureCache(tmp_path / "warm"), CountingAnnotator()
    cache.get_or_compute(clip, annotator)
    damage(cache.path(clip, annotator))

    maps = cache.get_or_compute(clip, annotator)
    assert annotator.calls == 2
    assert torch.equal(maps, _cold(tmp_path, clip))
    assert "ignoring" in caplog.text and "structure cache entry" in caplog.text
    # The recomputed entry replaced the damaged one.
    assert torch.equal(cache.get_or_compute(clip, annotator), maps) and annotator.calls == 2


def test_an_entry_that_is_a_folder_is_ignored_and_the_run_goes_on(tmp_path, clip, caplog):
    cache, annotator = StructureCache(tmp_path / "warm"), CountingAnnotator()
    cache.path(clip, annotator).mkdir(parents=True)
    maps = cache.get_or_compute(clip, annotator)
    assert torch.equal(maps, _cold(tmp_path, clip))
    assert "not a file" in caplog.text and "could not write" in caplog.text


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, clip, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    maps = StructureCache(not_a_folder / "cache").get_or_compute(clip, CountingAnnotator())
    assert torch.equal(maps, _cold(tmp_path, clip))
    assert "could not write structure cache entry" in caplog.text


def test_a_full_disk_is_a_warning_and_leaves_no_temporary(tmp_path, clip, caplog, monkeypatch):
    import errno

    import ccedit.annotators.cache as cache_module

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "save_file", full_disk)
    cache = StructureCache(tmp_path / "warm")
    maps = cache.get_or_compute(clip, CountingAnnotator())
    assert torch.equal(maps, _cold(tmp_path, clip))
    assert "No space left on device" in caplog.text
    assert not [p for p in (tmp_path / "warm").rglob("*") if p.is_file()]


def test_an_unreadable_entry_is_a_warning(tmp_path, clip, caplog, monkeypatch):
    import ccedit.annotators.cache as cache_module

    cache, annotator = StructureCache(tmp_path / "warm"), CountingAnnotator()
    cache.get_or_compute(clip, annotator)

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_module, "safe_open", unreadable)
    assert torch.equal(cache.get_or_compute(clip, annotator), _cold(tmp_path, clip))
    assert "Permission denied" in caplog.text and annotator.calls == 2


def test_least_recently_used_entries_are_evicted_beyond_the_limit(tmp_path, clip):
    import os

    entry_bytes = 3 * 3 * 40 * 56  # 3 frames, 3 channels, uint8
    cache = StructureCache(tmp_path, max_bytes=2 * entry_bytes + 1000)  # two entries and their headers
    a, b, c = CountingAnnotator(0.9), CountingAnnotator(0.8), CountingAnnotator(0.7)
    cache.get_or_compute(clip, a)
    cache.get_or_compute(clip, b)
    # Make the order of use unambiguous whatever the file system's timestamp resolution: b older than a.
    os.utime(cache.path(clip, b), (1_000, 1_000))
    os.utime(cache.path(clip, a), (2_000, 2_000))
    cache.get_or_compute(clip, a)  # a hit refreshes a
    assert a.calls == 1
    cache.get_or_compute(clip, c)
    assert cache.path(clip, a).is_file() and cache.path(clip, c).is_file()
    assert not cache.path(clip, b).exists()
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.safetensors")) <= cache.max_bytes


def test_an_entry_larger_than_the_limit_is_not_stored(tmp_path, clip):
    cache = StructureCache(tmp_path / "small", max_bytes=100)
    assert torch.equal(cache.get_or_compute(clip, CountingAnnotator()), _cold(tmp_path, clip))
    assert not list((tmp_path / "small").rglob("*.safetensors"))


def test_stale_temporaries_of_killed_runs_are_deleted(tmp_path, clip):
    import os

    cache, annotator = StructureCache(tmp_path), CountingAnnotator()
    folder = cache.path(clip, annotator).parent
    folder.mkdir(parents=True)
    stale = folder / f".{'a' * 64}.tmp-k1ll3d_.safetensors"
    fresh = folder / f".{'b' * 64}.tmp-wr1t1ng.safetensors"  # a concurrent run writing right now
    unrelated = folder / ".notes.tmp-x.safetensors"  # not a name the cache gives
    for path in (stale, fresh, unrelated):
        path.write_bytes(b"partial")
    os.utime(stale, (1_000, 1_000))
    os.utime(unrelated, (1_000, 1_000))
    cache.get_or_compute(clip, annotator)
    assert not stale.exists()
    assert fresh.exists() and unrelated.exists()


def test_a_cache_on_a_really_full_disk_costs_only_time_and_leaves_no_file(small_disk, tmp_path, clip, caplog):
    from tests.conftest import fill_disk

    fill_disk(small_disk, leave_bytes=4096)  # less than one entry: safetensors itself fails to write
    cache, annotator = StructureCache(small_disk / "cache"), CountingAnnotator()
    maps = cache.get_or_compute(clip, annotator)
    assert torch.equal(maps, _cold(tmp_path, clip))
    assert "could not write structure cache entry" in caplog.text and "No space left" in caplog.text
    assert [p for p in (small_disk / "cache").rglob("*") if p.is_file()] == []  # no 0-byte entry or temporary


def _killed_while_writing(cache: StructureCache, clip, annotator) -> None:
    """In a child process, start writing the entry and die (no cleanup) halfway through the file."""
    import os

    import ccedit.annotators.cache as cache_module

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def write_half_then_die(tensors, filename, metadata=None):
                with open(filename, "wb") as f:
                    f.write(b"\0" * 100_000)
                os._exit(9)

            cache_module.save_file = write_half_then_die  # this child's own copy of the module
            cache.get_or_compute(clip, annotator)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9


@pytest.mark.parametrize("next_run", ["hit", "miss"])
def test_a_killed_writers_temporary_goes_on_the_next_run(tmp_path, clip, next_run):
    import os
    import time

    from ccedit.io.atomic import atomic_path

    cache, annotator = StructureCache(tmp_path), CountingAnnotator()
    if next_run == "hit":
        cache.get_or_compute(clip, CountingAnnotator(0.5))  # another entry, complete, in the same folder
    _killed_while_writing(cache, clip, annotator)
    folder = cache.path(clip, annotator).parent
    (left,) = [p for p in folder.iterdir() if p.name.startswith(f".{cache.key(clip, annotator)}")]
    assert left.stat().st_size == 100_000
    minutes_ago = time.time() - 120  # the killed run was minutes ago, not an hour
    os.utime(left, (minutes_ago, minutes_ago))
    with atomic_path(folder / "live.safetensors") as live:  # a writer still alive keeps its temporary
        os.utime(live, (minutes_ago, minutes_ago))
        cache.get_or_compute(clip, CountingAnnotator(0.5) if next_run == "hit" else annotator)
        assert live.exists()
    assert not left.exists()
