"""A click, box or word on one frame, tracked through the clip by tiny random SAM 2 / SAM 3 models, reaching the edit
(`ccedit edit --mask`), and cached in the structure cache so a second edit does not track again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ccedit.cli import main
from ccedit.io import read_image, read_video
from ccedit.io.resize import fit_frames
from ccedit.masks import MaskOptions, Sam2VideoTracker, Sam3VideoTracker, load_masks
from tests.conditioning import write_moving_disk_clip

NUM_FRAMES = 6


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_moving_disk_clip(tmp_path_factory.mktemp("clip"), num_frames=NUM_FRAMES)


def edit(clip, out, spec, tiny_sam2, tiny_sam3, cache) -> int:
    return main(["edit", str(clip), "--prompt", "a red car", "-o", str(out), "--model", "tiny", "--steps", "1",
                 "--height", "64", "--width", "64", "--mask", spec, f"mask.tracker={tiny_sam2}",
                 f"mask.text_tracker={tiny_sam3}", f"structure.cache_dir={cache}", "output.frames=true",
                 "--overwrite"])


def refuse_tracking(monkeypatch):
    def fail(*args):
        raise AssertionError("tracked again although the masks were cached")

    monkeypatch.setattr(Sam2VideoTracker, "track", fail)
    monkeypatch.setattr(Sam3VideoTracker, "track", fail)


@pytest.mark.parametrize("spec, source", [
    ("point:2,40,50", {"kind": "point", "frame": 2, "click": [40.0, 50.0]}),
    ("box:1,20,30,70,80", {"kind": "box", "frame": 1, "box": [20.0, 30.0, 70.0, 80.0]}),
    ("text:a bright disk", {"kind": "text", "prompt": "a bright disk"}),
])
def test_a_tracked_mask_reaches_the_edit_and_is_reused_from_the_cache(tmp_path, clip, tiny_sam2, tiny_sam3,
                                                                      monkeypatch, spec, source):
    cache, out = tmp_path / "cache", tmp_path / "o.mp4"
    assert edit(clip, out, spec, tiny_sam2, tiny_sam3, cache) == 0
    first = json.loads((tmp_path / "o.mp4.json").read_text())
    assert {k: first["mask"]["source"][k] for k in source} == source
    assert first["mask"]["source"]["model"] == (tiny_sam3 if source["kind"] == "text" else tiny_sam2)
    assert len(first["mask"]["coverage"]) == NUM_FRAMES and any(c > 0 for c in first["mask"]["coverage"])
    edited = np.stack([read_image(p) for p in sorted((tmp_path / "o_frames").glob("*.png"))])

    # The tracked masks the edit used, read back from the cache (tracking is refused from here on).
    refuse_tracking(monkeypatch)
    frames, fit = fit_frames(read_video(clip).frames, (64, 64), "crop")
    masks = load_masks(spec, frames, fit, MaskOptions(tracker=tiny_sam2, text_tracker=tiny_sam3), cache)
    assert masks.coverage == first["mask"]["coverage"]
    outside = masks.soft == 0
    assert np.array_equal(edited[outside], frames[outside])
    assert not np.array_equal(edited[masks.hard], frames[masks.hard])

    # A second edit of the clip takes the masks from the cache.
    assert edit(clip, out, spec, tiny_sam2, tiny_sam3, cache) == 0
    assert json.loads((tmp_path / "o.mp4.json").read_text())["mask"] == first["mask"]


def test_a_concept_found_in_no_frame_is_one_line_and_nothing_is_written(tmp_path, clip, tiny_sam2, tiny_sam3,
                                                                        monkeypatch, capsys):
    # What SAM 3 returns when the concept is nowhere in the clip: no object on any frame.
    monkeypatch.setattr(Sam3VideoTracker, "track", lambda self, frames, prompt: np.zeros(frames.shape[:3], bool))
    monkeypatch.setattr("ccedit.editing.load_edit_pipeline", lambda *a, **k: pytest.fail("the video model loaded"))
    assert edit(clip, tmp_path / "o.mp4", "text:a purple giraffe", tiny_sam2, tiny_sam3, tmp_path / "cache") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nothing like 'a purple giraffe' was found" in errors[0]
    assert not list(tmp_path.glob("o*"))
