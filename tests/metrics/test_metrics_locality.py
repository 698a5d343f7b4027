"""The locality metrics on constructed edits: a local edit, a global edit, and the margin that skips the band."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.errors import InvalidInputError
from ccedit.metrics import EditSample, build_metric


@pytest.fixture
def local_edit(kitten):
    """The kitten frames with a 40x40 square (rows and columns 40:80) painted red, and that square as the mask."""
    mask = np.zeros(kitten.shape[:3], bool)
    mask[:, 40:80, 40:80] = True
    edited = kitten.copy()
    edited[mask] = (255, 0, 0)
    return EditSample(frames=edited, prompt="a red square", source_frames=kitten, mask=mask)


def score(name, sample, **options):
    return build_metric(name, **options)(sample)


def test_an_edit_inside_the_mask_keeps_the_outside_perfectly(local_edit):
    assert score("locality_psnr", local_edit) == np.inf
    assert score("locality_ssim", local_edit) == pytest.approx(1.0, abs=1e-12)
    assert score("locality_changed", local_edit) == 0.0


def test_a_global_edit_scores_low(local_edit, kitten):
    brighter = EditSample(frames=np.clip(kitten.astype(int) + 40, 0, 255).astype(np.uint8), source_frames=kitten,
                          mask=local_edit.mask)
    assert score("locality_psnr", brighter) < 20
    assert score("locality_changed", brighter) > 0.9
    noisy = np.clip(kitten + np.random.default_rng(0).normal(0, 40, kitten.shape), 0, 255).astype(np.uint8)
    assert score("locality_ssim", EditSample(frames=noisy, source_frames=kitten, mask=local_edit.mask)) < 0.5


def test_the_margin_excludes_a_feather_band_outside_the_mask(local_edit, kitten):
    banded = local_edit.frames.copy()
    banded[:, 37:83, 37:40] = 0  # a 3-pixel band changed just left of the mask, as feathering would
    sample = EditSample(frames=banded, source_frames=kitten, mask=local_edit.mask)
    assert score("locality_changed", sample) > 0 and np.isfinite(score("locality_psnr", sample))
    assert score("locality_changed", sample, margin=3) > 0  # the band's corners lie beyond a disc of 3
    assert score("locality_changed", sample, margin=5) == 0.0
    assert score("locality_psnr", sample, margin=5) == np.inf


def test_the_tolerance_ignores_small_differences(local_edit, kitten):
    nudged = local_edit.frames.copy()
    nudged[:, :20] = np.clip(kitten[:, :20].astype(int) + 2, 0, 255)
    sample = EditSample(frames=nudged, source_frames=kitten, mask=local_edit.mask)
    assert score("locality_changed", sample) > 0
    assert score("locality_changed", sample, tolerance=2) == 0.0


def test_clip_text_scores_the_masked_region_only(local_edit, kitten):
    metric = build_metric("locality_clip_text", model="tiny")
    inside_only = metric(local_edit)
    other_outside = EditSample(frames=np.where(local_edit.mask[..., None], local_edit.frames, 0).astype(np.uint8),
                               prompt=local_edit.prompt, mask=local_edit.mask)
    assert metric(other_outside) == pytest.approx(inside_only, abs=1e-5)  # the outside does not count
    whole = build_metric("clip_text", model="tiny")(local_edit)
    assert inside_only != pytest.approx(whole, abs=1e-3)


def test_a_missing_or_misshapen_mask_is_one_line(local_edit):
    with pytest.raises(InvalidInputError, match="needs the region edit's mask"):
        score("locality_psnr", EditSample(frames=local_edit.frames, source_frames=local_edit.source_frames))
    wrong = EditSample(frames=local_edit.frames, source_frames=local_edit.source_frames, mask=local_edit.mask[:, :10])
    with pytest.raises(InvalidInputError, match="one mask per edited frame"):
        score("locality_ssim", wrong)
