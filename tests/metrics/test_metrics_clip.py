"""CLIP-space metrics on constructed clips, with the tiny random CLIP loaded from a saved folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, CLIPModel, CLIPTokenizer

from ccedit.errors import InvalidInputError
from ccedit.metrics import EditSample, build_metric

PROMPT = "a wooden pirate ship with black sails"


def direct_cosines(folder: str, frames: np.ndarray, prompt: str) -> torch.Tensor:
    """cos(frame, prompt) per frame straight from transformers: PIL processor, get_*_features, L2 normalisation."""
    model = CLIPModel.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder, backend="pil")(images=list(frames), return_tensors="pt")
    tokens = CLIPTokenizer.from_pretrained(folder)([prompt], padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(**pixels)
        text = model.get_text_features(**tokens)
        image, text = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (image, text))
        logits = model(**pixels, **tokens).logits_per_image  # what LOVEU-TGVE reads: cos * exp(logit_scale)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    cosines = (image @ text.T)[:, 0]
    torch.testing.assert_close(logits[:, 0] / model.logit_scale.exp(), cosines, atol=1e-5, rtol=1e-5)
    return cosines


def test_clip_text_equals_a_direct_computation_with_the_same_model(clip_folder, kitten):
    cosines = direct_cosines(clip_folder, kitten, PROMPT)
    sample = EditSample(frames=kitten, prompt=PROMPT)
    assert build_metric("clip_text", model=clip_folder)(sample) == pytest.approx(100 * cosines.mean().item(), abs=1e-4)
    assert build_metric("clip_text_b32", model=clip_folder)(sample) == pytest.approx(cosines.mean().item(), abs=1e-6)


def test_pickscore_is_the_checkpoints_logit_scale_times_the_cosine(clip_folder, kitten):
    cosines = direct_cosines(clip_folder, kitten, PROMPT)
    scale = CLIPModel.from_pretrained(clip_folder).logit_scale.exp().item()
    metric = build_metric("pickscore", model=clip_folder, processor=clip_folder)
    assert metric(EditSample(frames=kitten, prompt=PROMPT)) == pytest.approx(scale * cosines.mean().item(), abs=1e-4)
    assert metric.describe()["logit_scale"] == pytest.approx(scale)


def test_identical_frames_give_perfect_frame_consistency(kitten, boat):
    still = EditSample(frames=np.repeat(kitten[:1], 4, axis=0))
    mixed = EditSample(frames=np.stack([kitten[0], boat[0], kitten[1], boat[1]]))
    for name in ("clip_frame", "clip_frame_consecutive"):
        metric = build_metric(name, model="tiny")
        assert metric(still) == pytest.approx(1.0, abs=1e-6), name
        assert metric(mixed) < 0.99, name  # two scenes alternating are far from consistent


def test_all_pairs_and_consecutive_pairing_differ_on_drift(kitten, boat):
    # Two halves: consecutive pairs cross the cut once, all pairs compare across it 8 times out of 12.
    frames = np.stack([kitten[0], kitten[0], boat[0], boat[0]])
    all_pairs = build_metric("clip_frame", model="tiny")(EditSample(frames=frames))
    consecutive = build_metric("clip_frame_consecutive", model="tiny")(EditSample(frames=frames))
    cross = build_metric("clip_frame", model="tiny")(EditSample(frames=frames[1:3]))  # the one cross-scene cosine
    assert consecutive == pytest.approx((2 + cross) / 3, abs=1e-5)
    assert all_pairs == pytest.approx((4 + 8 * cross) / 12, abs=1e-5)


def test_a_per_frame_metric_on_a_16_9_frame_uses_the_central_square(sailboat):
    frame = sailboat[:1]  # (1, 288, 512, 3)
    height, width = frame.shape[1:3]
    left = (width - height) // 2
    # The processor shrinks by 9 with a bicubic filter reaching 2 source pixels per output pixel (18 here): beyond
    # a 32-pixel margin around the central square nothing can reach the crop.
    margin = 32
    noisy_sides = frame.copy()
    rng = np.random.default_rng(0)
    for columns in (slice(0, left - margin), slice(left + height + margin, width)):
        noisy_sides[:, :, columns] = rng.integers(0, 256, noisy_sides[:, :, columns].shape)
    noisy_centre = frame.copy()
    noisy_centre[:, 100:180, left + 100 : left + 180] = 0

    metric = build_metric("clip_text", model="tiny")
    score = metric(EditSample(frames=frame, prompt=PROMPT))
    assert metric(EditSample(frames=noisy_sides, prompt=PROMPT)) == pytest.approx(score, abs=1e-6)
    assert abs(metric(EditSample(frames=noisy_centre, prompt=PROMPT)) - score) > 1e-3
    assert "central 32x32 square" in metric.describe()["resolution"]


def test_edit_success_counts_frames_closer_to_the_target_prompt(kitten, boat):
    metric = build_metric("edit_success", model="tiny")
    frames = np.concatenate([kitten, boat])
    forward = metric(EditSample(frames=frames, prompt="a boat on a lake", source_prompt="a kitten on a floor"))
    backward = metric(EditSample(frames=frames, prompt="a kitten on a floor", source_prompt="a boat on a lake"))
    # Without ties every frame succeeds in exactly one direction; ties would succeed in both.
    assert forward + backward == pytest.approx(1.0)
    assert forward in {k / len(frames) for k in range(len(frames) + 1)}
    assert metric(EditSample(frames=frames, prompt=PROMPT, source_prompt=PROMPT)) == 1.0  # ties count as success


def test_an_over_long_prompt_is_refused_where_the_reference_does_not_truncate(kitten):
    long_prompt = "x" * 300  # the tiny tokenizer spells characters, so this is over its 256 positions
    with pytest.raises(InvalidInputError, match="over the model's 256: shorten it") as error:
        build_metric("clip_text", model="tiny")(EditSample(frames=kitten, prompt=long_prompt))
    assert "\n" not in str(error.value)
    # PickScore truncates, as its reference does.
    build_metric("pickscore", model="tiny")(EditSample(frames=kitten, prompt=long_prompt))
