"""The studio's work without a browser (tiny model, 8 frames, 64x64, 2 steps): a keyframe edited from the prompt is
the one `--keyframe auto@K` makes."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.config import EditJob, KeyframeSpec
from ccedit.ui.studio import Studio, edit_settings
from tests.conftest import VIDEOS

# add_prompt and structure_scale away from their defaults, so both reach the keyframe's edit the edit's way
SETTINGS = (*edit_settings(8, 64, 64, 2, 3), "sampling.add_prompt=watercolor", "sampling.structure_scale=0.5")


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

