"""Structure fidelity through ccedit's annotators (Canny: no weights needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.errors import InvalidInputError, UserError
from ccedit.metrics import EditSample, build_metric


def test_structure_fidelity_is_zero_for_the_source_itself_and_grows_when_structure_changes(kitten):
    metric = build_metric("structure_mse", annotator="canny")
    assert metric(EditSample(frames=kitten, source_frames=kitten)) == 0.0
    recoloured = (255 - kitten).astype(np.uint8)  # same edges, other colours
    flipped = kitten[:, :, ::-1].copy()  # other edges
    assert metric(EditSample(frames=recoloured, source_frames=kitten)) < 0.2 * metric(
        EditSample(frames=flipped, source_frames=kitten)
    )


def test_the_source_is_scored_at_the_edited_frames_size(kitten):
    metric = build_metric("structure_mse", annotator="canny", annotator_options={"low_threshold": 50})
    half = kitten[:, ::2, ::2].copy()
    assert metric(EditSample(frames=half, source_frames=kitten)) < metric(
        EditSample(frames=half[:, :, ::-1].copy(), source_frames=kitten)
    )
    assert metric.describe()["annotator_options"] == {"low_threshold": 50}


def test_structure_fidelity_refuses_bad_inputs(kitten):
    with pytest.raises(InvalidInputError, match="needs the source video"):
        build_metric("structure_mse")(EditSample(frames=kitten))
    with pytest.raises(InvalidInputError, match="source video has 3 frames and the edit 4"):
        build_metric("structure_mse")(EditSample(frames=kitten, source_frames=kitten[:3]))
    with pytest.raises(UserError, match="unknown annotator 'sobel'"):
        build_metric("structure_mse", annotator="sobel")
