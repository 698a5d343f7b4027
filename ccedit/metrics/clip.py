"""CLIP-space metrics as the public reference code computes them (see METRICS.md): text alignment, frame
consistency (all pairs and consecutive), edit success rate and PickScore.

Frames go through the model's own processor, which scales the shorter side to the crop size (bicubic) and keeps
the central square, so a 16:9 frame is scored on its middle, exactly as the reference scripts do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ccedit.errors import InvalidInputError
from ccedit.metrics.base import EditSample, Metric
from ccedit.metrics.loading import (
    TINY,
    check_pretrained,
    load_clip_processor,
    load_pretrained,
    pretrained_record,
    resolve_dtype,
)

CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_B32 = "openai/clip-vit-base-patch32"
# A processor folder holds one of these: hub repositories the image processor's file, transformers 5 a joint one.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _embeds(output: Any) -> torch.Tensor:
    """The projected embedding from `get_*_features` (a tensor before transformers 5, an output's pooler after)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEncoder:
    """A CLIP model and its processor, loaded on first use, that turn frames and prompts into unit vectors.

    Args:
        model (`str`): A folder, a hub id, or `"tiny"` (the seeded random CLIP of `ccedit.metrics.tiny`).
        processor (`str`, *optional*): Where the processor lives when not beside the model (PickScore).
        metric (`str`): The metric's name, for error messages.
        device (`torch.device`), dtype (`str`), batch_size (`int`): How the model runs.
    """

    def __init__(self, model: str, processor: str | None, *, metric: str, device: torch.device, dtype: str,
                 batch_size: int):
        self.metric = metric
        self.model_reference = check_pretrained(model, metric=metric, option="model", what="CLIP model")
        option = "processor" if processor else "model"
        self.processor_reference = check_pretrained(
            processor or model, metric=metric, option=option, what="CLIP processor", files=PROCESSOR_FILES
        )
        self._processor_option = option
        self.device, self.dtype_name, self.batch_size = device, dtype, batch_size
        self.dtype = resolve_dtype(dtype, metric)
        self._model = None
        self._processor = None

    @property
    def processor(self):
        if self._processor is None:
            if self.processor_reference == TINY:
                from ccedit.metrics.tiny import tiny_clip

                self._processor = tiny_clip()[1]
            else:
                self._processor = load_clip_processor(
                    self.processor_reference, metric=self.metric, option=self._processor_option
                )
        return self._processor

    @property
    def model(self):
        if self._model is None:
            if self.model_reference == TINY:
                from ccedit.metrics.tiny import tiny_clip

                model = tiny_clip()[0]
            else:
                # AutoModel: PickScore's checkpoint is a CLIPModel saved under its own name; plain CLIP loads the same.
                from transformers import AutoModel

                model = load_pretrained(AutoModel.from_pretrained, self.model_reference, metric=self.metric,
                                        option="model", what="CLIP model")
            self._model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        return self._model

    def logit_scale(self) -> float:
        """The checkpoint's stored `exp(logit_scale)` (100 for OpenAI's CLIP, about 20 for PickScore)."""
        return float(self.model.logit_scale.exp())

    def image_embeds(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Unit image embeddings `(n, dim)` float32 of uint8 RGB images `(height, width, 3)`, any sizes."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processor(images=list(images[start:start + self.batch_size]), return_tensors="pt")
            features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device, self.dtype))
            out.append(_embeds(features).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def text_embeds(self, texts: list[str], truncate: bool) -> torch.Tensor:
        """Unit text embeddings `(n, dim)` float32; without `truncate`, a prompt over the limit is an error."""
        tokenizer = self.processor.tokenizer
        limit = tokenizer.model_max_length
        tokens = tokenizer(texts, padding=True, truncation=truncate, max_length=limit if truncate else None,
                           return_tensors="pt")
        if tokens["input_ids"].shape[1] > limit:
            raise InvalidInputError(
                f"metric {self.metric!r}: a prompt is {tokens['input_ids'].shape[1]} CLIP tokens long, over the "
                f"model's {limit}: shorten it (this metric does not truncate, as its reference does not)"
            )
        features = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return torch.nn.functional.normalize(_embeds(features).float(), dim=-1)

    def record(self) -> dict[str, Any]:
        image_processor = self.processor.image_processor
        crop = image_processor.crop_size
        record = {"backbone": self.model_reference, **pretrained_record(self.model_reference)}
        record.pop("model")
        if self.processor_reference != self.model_reference:
            record["processor"] = self.processor_reference
        record["resolution"] = (
            f"shorter side to {image_processor.size['shortest_edge']} (bicubic), central {crop['height']}x"
            f"{crop['width']} square"
        )
        record["precision"] = self.dtype_name
        return record


class ClipMetric(Metric):
    """Base of the CLIP-space metrics: one `ClipEncoder` built from the metric's options.

    Args:
        model (`str`, *optional*): A CLIP folder, hub id or `"tiny"`; defaults to the metric's reference backbone.
        processor (`str`, *optional*): Processor folder or hub id, when it is not stored with the model.
        device (`str`, defaults to `"cpu"`), batch_size (`int`, defaults to 16).
        dtype (`str`, defaults to `"float32"`): `float16` matches the OpenAI `clip` package's GPU runs more closely.
    """

    default_model: ClassVar[str] = CLIP_L14
    default_processor: ClassVar[str | None] = None
    scale: ClassVar[str] = "x1 (cosine)"
    pairing: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __init__(self, model: str | None = None, processor: str | None = None, device: str = "cpu",
                 batch_size: int = 16, dtype: str = "float32"):
        super().__init__(device=device, batch_size=batch_size)
        model = model or self.default_model
        # A model given without a processor brings its own (the default processor belongs to the default model).
        processor = processor or (self.default_processor if model == self.default_model else None)
        self.clip = ClipEncoder(model, processor, metric=self.name, device=self.device, dtype=dtype,
                                batch_size=batch_size)

    def prepare(self) -> None:
        self.clip.processor  # noqa: B018 - loading is the point
        self.clip.model  # noqa: B018

    def _record(self) -> dict[str, Any]:
        return {**self.clip.record(), "scale": self.scale, "pairing": self.pairing, "reference": self.reference}


class ClipTextAlignment(ClipMetric):
    """CLIP-Text: mean over frames of 100 x cos(frame, target prompt), on ViT-L/14 (LOVEU `clip_score_text`)."""

    name = "clip_text"
    requires = ("prompt",)
    scale = "x100 (100 * cosine; typically 20-35)"
    pairing = "each frame with the target prompt, mean over frames"
    reference = "LOVEU-TGVE clip_score_text"
    multiplier: ClassVar[float] = 100.0

    def _score(self, sample: EditSample) -> float:
        images = self.clip.image_embeds(sample.frames)
        text = self.clip.text_embeds([sample.prompt], truncate=False)
        return self.multiplier * (images @ text.T).mean().item()


class ClipTextAlignmentB32(ClipTextAlignment):
    """CLIP-Text on ViT-B/32 as a raw cosine, on a 0-1 scale (RAVE `clip_text`)."""

    name = "clip_text_b32"
    default_model = CLIP_B32
    scale = "x1 (cosine)"
    reference = "RAVE clip_text"
    multiplier = 1.0


def _check_two_frames(sample: EditSample, metric: str) -> None:
    if len(sample.frames) < 2:
        raise InvalidInputError(f"metric {metric!r} compares frames with each other: the clip needs at least 2 frames")


class ClipFrameConsistency(ClipMetric):
    """CLIP-Frame: mean cosine over all ordered pairs of distinct frames, on ViT-L/14 (LOVEU `clip_score_frame`)."""

    name = "clip_frame"
    pairing = "all ordered pairs of distinct frames: (sum of the cosine matrix - its diagonal) / (n (n - 1))"
    reference = "LOVEU-TGVE clip_score_frame"

    def _score(self, sample: EditSample) -> float:
        _check_two_frames(sample, self.name)
        embeds = self.clip.image_embeds(sample.frames)
        n = len(embeds)
        cosines = embeds @ embeds.T  # (n, n)
        return ((cosines.sum() - cosines.diagonal().sum()) / (n * (n - 1))).item()


class ClipFrameConsecutive(ClipMetric):
    """Tem-Con: mean cosine of consecutive frames (t, t+1), on ViT-B/32 (FateZero `frame_acc_tem_con`)."""

    name = "clip_frame_consecutive"
    default_model = CLIP_B32
    pairing = "consecutive frames (t, t+1), mean over the n - 1 pairs"
    reference = "FateZero Tem-Con"

    def _score(self, sample: EditSample) -> float:
        _check_two_frames(sample, self.name)
        embeds = self.clip.image_embeds(sample.frames)
        return (embeds[:-1] * embeds[1:]).sum(dim=-1).mean().item()


class EditSuccessRate(ClipMetric):
    """Frame accuracy: the fraction of frames closer to the target prompt than to the source prompt, on ViT-B/32.

    A frame succeeds when cos(frame, target) >= cos(frame, source), which is FateZero's softmax test
    P(target) >= P(source) without the softmax (it does not change the order); ties count as success.
    """

    name = "edit_success"
    requires = ("prompt", "source_prompt")
    default_model = CLIP_B32
    scale = "fraction of frames (0-1)"
    pairing = "each frame with [source prompt, target prompt]: success when cos(target) >= cos(source)"
    reference = "FateZero edit_success (frame accuracy)"

    def _score(self, sample: EditSample) -> float:
        images = self.clip.image_embeds(sample.frames)
        source, target = self.clip.text_embeds([sample.source_prompt, sample.prompt], truncate=False)
        return (images @ target >= images @ source).float().mean().item()


class PickScore(ClipMetric):
    """PickScore: mean over frames of exp(logit_scale) x cos(frame, prompt) with the checkpoint's stored scale.

    No softmax across images, so this is not the paper's preference probability (LOVEU / RAVE `pick_score`).
    """

    name = "pickscore"
    requires = ("prompt",)
    default_model = "pickapic-anonymous/PickScore_v1"
    default_processor = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    scale = "checkpoint's exp(logit_scale) * cosine (about 20 for PickScore_v1)"
    pairing = "each frame with the target prompt (truncated to the text limit), mean over frames"
    reference = "LOVEU-TGVE pick_score"

    def _score(self, sample: EditSample) -> float:
        images = self.clip.image_embeds(sample.frames)
        text = self.clip.text_embeds([sample.prompt], truncate=True)
        return self.clip.logit_scale() * (images @ text.T).mean().item()

    def _record(self) -> dict[str, Any]:
        return {**super()._record(), "logit_scale": self.clip.logit_scale()}
