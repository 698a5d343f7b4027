"""Tracking with tiny random SAM 2 / SAM 3 video models loaded by path: the plumbing (every frame masked, the
memory bound, the same masks as transformers' whole-clip session), not the masks' quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.errors import UserError
from ccedit.masks import Sam2VideoTracker, Sam3VideoTracker, TrackPrompt

CLICK = TrackPrompt(frame=4, point=(20.0, 30.0))


def whole_clip_sam2(folder: str, frames: np.ndarray, prompt: TrackPrompt) -> np.ndarray:
    """transformers' own way: every frame prepared up front, nothing pruned."""
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    model, processor = Sam2VideoModel.from_pretrained(folder).eval(), Sam2VideoProcessor.from_pretrained(folder)
    session = processor.init_video_session(video=list(frames), inference_device="cpu")
    processor.add_inputs_to_inference_session(session, frame_idx=prompt.frame, obj_ids=1,
                                              input_points=[[[list(prompt.point)]]], input_labels=[[[1]]])
    logits = {}
    with torch.inference_mode():
        model(inference_session=session, frame_idx=prompt.frame)
        for reverse in (False, True):
            for output in model.propagate_in_video_iterator(session, start_frame_idx=prompt.frame, reverse=reverse):
                logits[output.frame_idx] = output.pred_masks
    height, width = frames.shape[1:3]
    return np.stack([processor.post_process_masks([logits[t]], original_sizes=[[height, width]])[0]
                     .any(dim=0).reshape(height, width).numpy() for t in range(len(frames))])


def test_a_click_on_frame_k_yields_a_mask_for_every_frame_in_bounded_chunks(tiny_sam2, fitted):
    frames, _ = fitted
    tracker = Sam2VideoTracker(tiny_sam2, chunk_frames=3)
    masks = tracker.track(frames, CLICK)
    assert masks.shape == (10, 48, 64) and masks.dtype == bool
    assert masks.reshape(10, -1).any(axis=1).all()  # the tiny model's random output covers something everywhere
    assert tracker.last_frames.most_held == 3  # never more prepared frames than one chunk
    # forward from 4: chunks [3-5], [6-8], [9]; backward: [3-5] again, [0-2]
    assert tracker.last_frames.chunks_prepared == 5
    # window 2 on each side of the current frame, plus the 2 next to the clicked frame: far below 10 frames
    assert tracker.most_outputs_held <= 2 * 2 + 2 + 1
    np.testing.assert_array_equal(masks, whole_clip_sam2(tiny_sam2, frames, CLICK))


@pytest.mark.parametrize("prompt", [TrackPrompt(frame=0, box=(4.0, 4.0, 40.0, 30.0)),
                                    TrackPrompt(frame=9, mask=np.pad(np.ones((10, 10), bool), ((5, 33), (20, 34))))])
def test_boxes_and_masks_are_tracked_from_their_frame_to_both_ends(tiny_sam2, fitted, prompt):
    frames, _ = fitted
    masks = Sam2VideoTracker(tiny_sam2, chunk_frames=4).track(frames, prompt)
    assert masks.shape == (10, 48, 64)
    assert masks.reshape(10, -1).any(axis=1).all()


def test_a_text_concept_is_tracked_with_sam3_in_chunks_like_the_whole_clip_session(tiny_sam3, fitted):
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    frames, _ = fitted
    tracker = Sam3VideoTracker(tiny_sam3, chunk_frames=4)
    masks = tracker.track(frames, TrackPrompt(text="a cat"))
    assert masks.shape == (10, 48, 64) and masks.any()
    assert tracker.last_frames.most_held == 4

    model, processor = Sam3VideoModel.from_pretrained(tiny_sam3).eval(), Sam3VideoProcessor.from_pretrained(tiny_sam3)
    session = processor.init_video_session(video=list(frames), inference_device="cpu")
    processor.add_text_prompt(session, "a cat")
    expected = np.zeros_like(masks)
    for output in model.propagate_in_video_iterator(session):
        instances = processor.postprocess_outputs(session, output)["masks"]
        if len(instances):
            expected[output.frame_idx] = instances.any(dim=0).numpy()
    np.testing.assert_array_equal(masks, expected)


def test_a_missing_tracker_folder_is_one_line_naming_the_option(tmp_path, fitted):
    with pytest.raises(UserError) as error:
        Sam2VideoTracker(str(tmp_path / "no-such-model")).track(fitted[0], CLICK)
    message = str(error.value)
    assert "\n" not in message and "SAM 2 video model" in message and "tracker" in message


def test_a_folder_without_the_model_is_one_line(tmp_path, fitted):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError) as error:
        Sam3VideoTracker(str(tmp_path)).track(fitted[0], TrackPrompt(text="a dog"))
    assert "\n" not in str(error.value) and "text_tracker" in str(error.value)
