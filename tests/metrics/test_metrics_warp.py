"""Flow warping error: the error function with known flows, the occlusion mask, and RAFT end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.errors import InvalidInputError, ModelNotFoundError
from ccedit.metrics import EditSample, build_metric, occlusion_mask, warp_error
from ccedit.metrics.warp import _to_tensor

SHIFT = 2  # pixels per frame


def constant_flow(frames: torch.Tensor, dx: float, dy: float = 0.0) -> torch.Tensor:
    flow = torch.zeros(len(frames) - 1, 2, *frames.shape[2:])
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


@pytest.fixture
def panning(sailboat) -> torch.Tensor:
    """A pan over a real frame: 4 windows of 256x256, each 2 pixels further right, so content moves 2 px left."""
    return _to_tensor(np.stack([sailboat[0, 16:272, 100 + SHIFT * t : 356 + SHIFT * t] for t in range(4)]))


def test_a_static_video_has_zero_warp_error_and_a_shuffled_one_a_large_error(sailboat):
    static = _to_tensor(np.repeat(sailboat[:1], 4, axis=0))
    zero = constant_flow(static, 0.0)
    assert warp_error(static, zero, zero) < 1e-10  # zero up to grid_sample's coordinate round trip
    shuffled = _to_tensor(sailboat[[0, 3, 1, 2]])  # non-adjacent frames of a tracking shot
    assert warp_error(shuffled, zero, zero) > 1e-3


def test_the_edited_next_frame_is_warped_onto_the_current_one_with_the_forward_flow(panning):
    # Content at x in frame t is at x - 2 in frame t+1: F(t->t+1) = (-2, 0), F(t+1->t) = (+2, 0).
    right = warp_error(panning, constant_flow(panning, -SHIFT), constant_flow(panning, SHIFT))
    no_flow = warp_error(panning, constant_flow(panning, 0.0), constant_flow(panning, 0.0))
    # RAVE's mismatch: warping with the flow of the other direction doubles the offset instead of undoing it.
    reversed_ = warp_error(panning, constant_flow(panning, SHIFT), constant_flow(panning, -SHIFT))
    assert right < 0.05 * no_flow  # only the 2 columns that enter at the border differ
    assert reversed_ > no_flow


def test_occlusion_mask_marks_inconsistent_flow_and_motion_boundaries():
    shape = (1, 2, 8, 10)
    forward = torch.zeros(shape)
    forward[:, 0] = 3.0
    assert not occlusion_mask(forward, -forward).any()  # consistent: the round trip returns home
    assert occlusion_mask(forward, forward).all()  # both say +3: |6|^2 > 0.01 * 18 + 0.5

    split_forward = torch.zeros(shape)
    split_forward[:, 0, :, 5:] = 5.0  # right half moves 5 px right
    split_backward = -split_forward  # consistent wherever the forward flow lands
    mask = occlusion_mask(split_forward, split_backward)[0]
    expected = torch.zeros(8, 10, dtype=torch.bool)
    expected[:, 4] = True  # the forward difference across the boundary is 5: a motion boundary
    assert torch.equal(mask, expected)


def test_occluded_pixels_do_not_count(panning):
    flow = constant_flow(panning, 0.0)
    occluding_backward = constant_flow(panning, 3.0)  # with zero forward flow this round trip misses by 3 px
    occluding_backward[:, :, :, 128:] = 0.0  # right half consistent
    right_half = warp_error(panning[..., 128:], flow[..., 128:], flow[..., 128:])
    # The round trip fails on the left half only (the forward flow is smooth, so there is no motion boundary):
    # the error is that of the right half alone.
    assert warp_error(panning, flow, occluding_backward) == pytest.approx(right_half, rel=1e-5)


def test_warp_error_end_to_end_with_raft_on_the_source_video(small_sailboat, raft_folder):
    # The tiny RAFT's flows are random but below a third of a pixel (see ccedit.metrics.tiny), so warping barely
    # moves pixels: a still clip keeps a tiny interpolation error, while a shuffled one keeps its full frame
    # differences. A trained RAFT would give ~0 flow on the still clip; only these bounds hold for random weights.
    metric = build_metric("warp_error", model=raft_folder, num_flow_updates=4)
    still = np.repeat(small_sailboat[:1], 4, axis=0)
    shuffled = small_sailboat[[0, 3, 1, 2]]
    still_error = metric(EditSample(frames=still, source_frames=still))
    shuffled_error = metric(EditSample(frames=shuffled, source_frames=small_sailboat))
    plain = ((_to_tensor(shuffled)[1:] - _to_tensor(shuffled)[:-1]) ** 2).mean().item()  # no warping, no mask
    assert still_error < 0.02 * shuffled_error
    assert shuffled_error == pytest.approx(plain, rel=0.2)
    # The folder holds the same weights as the built-in tiny model.
    tiny = build_metric("warp_error", model="tiny", num_flow_updates=4)
    assert tiny(EditSample(frames=shuffled, source_frames=small_sailboat)) == pytest.approx(shuffled_error, abs=1e-7)


def test_warp_error_refuses_bad_inputs_and_missing_models(small_sailboat, monkeypatch, tmp_path):
    metric = build_metric("warp_error", model="tiny")
    with pytest.raises(InvalidInputError, match="needs the source video"):
        metric(EditSample(frames=small_sailboat))
    with pytest.raises(InvalidInputError, match="at least 2"):
        metric(EditSample(frames=small_sailboat[:1], source_frames=small_sailboat[:1]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch.hub cache
    with pytest.raises(ModelNotFoundError, match="set the metric's `model`") as error:
        build_metric("warp_error")
    assert "\n" not in str(error.value)
    with pytest.raises(ModelNotFoundError, match="neither raft_large nor raft_small nor a folder"):
        build_metric("warp_error", model=str(tmp_path / "missing"))
