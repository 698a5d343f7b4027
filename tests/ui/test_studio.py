"""The studio's work without a browser (tiny model, 8 frames, 64x64, 2 steps): a keyframe edited from the prompt is
the one `--keyframe auto@K` makes, and overlapping requests share one loaded model, one after the other."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest

from ccedit.config import EditJob, KeyframeSpec
from ccedit.errors import UserError
from ccedit.ui.studio import Studio, edit_settings
from tests.conftest import VIDEOS

# add_prompt and the structure scale away from their defaults, so both reach the keyframe's edit the edit's way
SETTINGS = (*edit_settings(8, 64, 64, 2, 3), "sampling.add_prompt=watercolor", "structure.scales=[0.5]")


@pytest.fixture
def studio(tmp_path):
    return Studio(tmp_path / "work", "tiny", [VIDEOS])


def test_a_keyframe_edited_from_the_prompt_is_the_one_an_auto_keyframe_edit_makes(studio):
    clip = studio.open_clip(None, str(VIDEOS / "kitten.mp4"), SETTINGS)
    cfg = studio.config(SETTINGS)
    # `--keyframe auto@5`, the edit's first keyframe, is edited with seed + 1 at sampling.auto_keyframe_strength.
    _, image = studio.auto_keyframe(clip, 5, "a dog", cfg.sampling.seed + 1, cfg.sampling.auto_keyframe_strength)
    result = studio.worker.session(cfg).edit(EditJob(str(VIDEOS / "kitten.mp4"), "a dog", [KeyframeSpec("auto", 5)]))
    assert result.keyframe_indices == [5]
    assert np.array_equal(image, result.keyframes[0])
    assert not np.array_equal(image, clip.frames[5])


def test_a_second_request_waits_for_the_first_and_shares_its_model(studio, monkeypatch):
    import ccedit.editing
    import ccedit.pipelines.keyframe_edit as keyframe_edit
    import ccedit.kinds as loading

    clip = studio.open_clip(None, str(VIDEOS / "kitten.mp4"), SETTINGS)
    loads, using, most_at_once = [], collections.Counter(), [0]

    def on_the_model(use, seconds=0.0):
        """`use`, noting which request (thread) is on the model while it runs."""
        def run(*args, **kwargs):
            me = threading.current_thread().name
            using[me] += 1
            most_at_once[0] = max(most_at_once[0], len(+using))
            try:
                time.sleep(seconds)  # a slow load: the other request arrives meanwhile
                return use(*args, **kwargs)
            finally:
                using[me] -= 1
        return run

    load_pipeline = on_the_model(loading.load_pipeline, seconds=1.0)
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: loads.append(threading.current_thread().name)
                        or load_pipeline(*a, **k))
    monkeypatch.setattr(keyframe_edit, "edit_keyframe", on_the_model(keyframe_edit.edit_keyframe))
    monkeypatch.setattr(ccedit.editing.EditSession, "edit", on_the_model(ccedit.editing.EditSession.edit))
    results = {}
    requests = [
        threading.Thread(name="keyframe", target=lambda: results.update(keyframe=studio.auto_keyframe(
            clip, 5, "a dog", 0, 0.75))),
        threading.Thread(name="preview", target=lambda: results.update(preview=studio.preview(
            clip, "a dog", None, 5))),
    ]
    for thread in requests:
        thread.start()
        time.sleep(0.3)  # the preview asks while the keyframe's request is loading the model
    for thread in requests:
        thread.join(timeout=120)
    assert loads == ["keyframe"]  # one model, loaded once, by the first request
    assert most_at_once[0] == 1  # the preview waited: never two requests on the model at once
    assert results["keyframe"][1].shape == (64, 64, 3) and results["preview"].is_file()


@pytest.mark.parametrize("limit", [0, -1, float("nan")])
def test_an_upload_limit_that_is_not_a_positive_size_is_refused_before_anything_is_written(tmp_path, limit):
    with pytest.raises(UserError, match="--max-upload-mb must be a positive number of megabytes"):
        Studio(tmp_path / "work", "tiny", [VIDEOS], max_upload_mb=limit)
    assert not (tmp_path / "work").exists()
