"""Keyframe fidelity: the keyframe reproduced where it was placed, and the rest of the clip against it in CLIP space."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ccedit.errors import InvalidInputError
from ccedit.metrics import EditSample, build_metric


def test_a_clip_that_is_the_keyframe_repeated_has_perfect_keyframe_fidelity(kitten):
    keyframe = kitten[0]
    sample = EditSample(frames=np.repeat(keyframe[None], 4, axis=0), keyframes={0: keyframe})
    assert build_metric("keyframe_mse")(sample) == 0.0
    assert build_metric("keyframe_clip", model="tiny")(sample) == pytest.approx(1.0, abs=1e-6)


def test_keyframe_fidelity_drops_when_the_clip_leaves_its_keyframe(kitten, boat):
    sample = EditSample(frames=np.stack([kitten[0], boat[0], boat[1], boat[2]]), keyframes={0: kitten[0]})
    assert build_metric("keyframe_mse")(sample) == 0.0  # the keyframe itself is still in place
    assert build_metric("keyframe_clip", model="tiny")(sample) < 0.99
    moved = EditSample(frames=np.stack([boat[0], kitten[0], kitten[0], kitten[0]]), keyframes={0: kitten[0]})
    expected = ((boat[0] / 255.0 - kitten[0] / 255.0) ** 2).mean()
    assert build_metric("keyframe_mse")(moved) == pytest.approx(expected, rel=1e-5)


def test_each_frame_is_compared_with_its_nearest_keyframe(kitten, boat):
    keyframes = {0: kitten[0], 3: boat[0]}
    metric = build_metric("keyframe_clip", model="tiny")
    nearest = EditSample(frames=np.stack([kitten[0], kitten[0], boat[0], boat[0]]), keyframes=keyframes)
    crossed = EditSample(frames=np.stack([kitten[0], boat[0], kitten[0], boat[0]]), keyframes=keyframes)
    assert metric(nearest) == pytest.approx(1.0, abs=1e-6)
    assert metric(crossed) < 0.99


def test_a_keyframe_at_another_size_is_resized_to_the_frames(kitten):
    large_keyframe = cv2.resize(kitten[0], (256, 256), interpolation=cv2.INTER_CUBIC)
    sample = EditSample(frames=kitten, keyframes={0: large_keyframe})
    assert build_metric("keyframe_mse")(sample) < 1e-3


def test_keyframe_metrics_say_what_is_missing(kitten):
    with pytest.raises(InvalidInputError, match="needs at least one keyframe"):
        build_metric("keyframe_mse")(EditSample(frames=kitten))
    with pytest.raises(InvalidInputError, match="keyframe index 7 is outside the clip's 4 frames"):
        build_metric("keyframe_mse")(EditSample(frames=kitten, keyframes={7: kitten[0]}))
