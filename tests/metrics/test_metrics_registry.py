"""The metric registry, the records written next to scores, and one-line errors for bad names and missing models."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.errors import InvalidInputError, ModelNotFoundError, UserError
from ccedit.metrics import METRICS, EditSample, build_metric

NEEDS_NO_MODEL = {"keyframe_mse", "structure_mse", "locality_psnr", "locality_ssim", "locality_changed"}


def test_an_unknown_metric_name_is_one_line_listing_the_valid_names():
    with pytest.raises(UserError) as error:
        build_metric("clip_score")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("unknown metric 'clip_score': choose one of ")
    assert message.endswith(", ".join(sorted(METRICS)))


def test_an_unknown_option_lists_the_metrics_options():
    with pytest.raises(UserError, match=r"metric 'clip_text' has no option backbone: its options are model, "):
        build_metric("clip_text", backbone="ViT-L/14")


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_records_backbone_scale_pairing_and_resolution(name, kitten):
    metric = build_metric(name, **({} if name in NEEDS_NO_MODEL else {"model": "tiny"}))
    record = metric.describe()
    assert record["metric"] == name
    assert repr(metric).startswith(f"{type(metric).__name__}(name={name!r}")
    assert {"backbone", "scale", "pairing", "resolution", "precision", "higher_is_better"} <= set(record)
    half = np.zeros(kitten.shape[:3], bool)
    half[:, :, : kitten.shape[2] // 2] = True
    sample = EditSample(frames=kitten, prompt="a dog", source_frames=kitten, source_prompt="a cat",
                        keyframes={0: kitten[0]}, mask=half)
    score = metric(sample)
    assert np.isfinite(score) or (name == "locality_psnr" and score == np.inf)  # an unchanged outside: infinite


def test_clip_metrics_record_their_reference_backbones_without_loading_them(monkeypatch):
    # With empty caches the defaults are not loaded; building must not need them, only scoring does. The hub is
    # taken to answer (it is never asked here): where it does not, building refuses an uncached model at once.
    import ccedit.hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(ccedit.hub._hub_answers, constants.ENDPOINT, True)
    assert build_metric("clip_text").clip.model_reference == "openai/clip-vit-large-patch14"
    assert build_metric("clip_text_b32").clip.model_reference == "openai/clip-vit-base-patch32"
    assert build_metric("clip_frame_consecutive").clip.model_reference == "openai/clip-vit-base-patch32"
    pick = build_metric("pickscore").clip
    assert (pick.model_reference, pick.processor_reference) == (
        "pickapic-anonymous/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    )


def test_an_uncached_hub_id_offline_fails_at_once_naming_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        build_metric("clip_text", model="ccedit-tests/not-cached")
    message = str(error.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message and "set the metric's `model`" in message
    with pytest.raises(ModelNotFoundError, match="set the metric's `processor`"):
        build_metric("pickscore", model="tiny", processor="ccedit-tests/not-cached")
    with pytest.raises(ModelNotFoundError, match=r"folder '.*missing' does not exist"):
        build_metric("clip_frame", model=str(tmp_path / "missing"))


def test_a_sample_missing_an_input_says_which(kitten):
    with pytest.raises(InvalidInputError, match="'edit_success' needs a source prompt"):
        build_metric("edit_success", model="tiny")(EditSample(frames=kitten, prompt="a dog"))
    with pytest.raises(InvalidInputError, match="must be uint8"):
        build_metric("clip_frame", model="tiny")(EditSample(frames=kitten.astype(np.float32)))
