"""The metric contract: an edited clip (with what it was edited from) in, one number per (video, edit) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ccedit.errors import InvalidInputError


@dataclass
class EditSample:
    """One edit to score.

    Args:
        frames (`np.ndarray` of shape `(frames, height, width, 3)`, `uint8`): The edited clip, RGB, as decoded.
        prompt (`str`): The target prompt the clip was edited with.
        source_frames (`np.ndarray` of shape `(frames, height, width, 3)`, `uint8`, *optional*):
            The input clip, frame for frame; any size (metrics resize it to the edited frames' size).
        source_prompt (`str`, *optional*): A prompt describing the input clip.
        keyframes (`dict[int, np.ndarray]`): Edited keyframes `(height, width, 3)` `uint8` by frame index.
        mask (`np.ndarray` of shape `(frames, height, width)`, *optional*): Where a region edit was allowed to act
            (bool, or float in [0, 1]: above 0 counts), at the edited frames' size; for the locality metrics.
    """

    frames: np.ndarray
    prompt: str = ""
    source_frames: np.ndarray | None = None
    source_prompt: str | None = None
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None


# What each optional input of `EditSample` is called in error messages.
_INPUT_NAMES = {
    "prompt": "a target prompt",
    "source_frames": "the source video (source_frames)",
    "source_prompt": "a source prompt (source_prompt)",
    "keyframes": "at least one keyframe (keyframes)",
    "mask": "the region edit's mask (mask)",
}


class Metric:
    """Base class of the metrics: `metric(sample)` returns one float, `metric.describe()` what it measured and how.

    Subclasses set `name`, `higher_is_better` and `requires` (the `EditSample` inputs they need besides `frames`),
    implement `_score` and `_record`, and load models lazily so that building a metric is cheap.

    Args:
        device (`str`, defaults to `"cpu"`): Where the metric's model runs.
        batch_size (`int`, defaults to 16): Frames per forward pass; changes speed and memory, never the score.
    """

    name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str = "cpu", batch_size: int = 16):
        if batch_size < 1:
            raise InvalidInputError(f"metric {self.name!r}: `batch_size` must be a positive integer, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size

    def __call__(self, sample: EditSample) -> float:
        """Score one edit; raises `InvalidInputError` naming what is missing or malformed."""
        self._check(sample)
        with torch.no_grad():
            return float(self._score(sample))

    def prepare(self) -> None:
        """Load the metric's model now (it loads on first use otherwise), so that a missing model fails before any
        work that needs the score; metrics without a model have nothing to load."""

    def describe(self) -> dict[str, Any]:
        """What a results file should record next to the score: backbone, scale, pairing, resolution, precision."""
        return {"metric": self.name, "higher_is_better": self.higher_is_better, **self._record()}

    def _check(self, sample: EditSample) -> None:
        check_clip(sample.frames, "frames", self.name)
        for name in self.requires:
            value = getattr(sample, name)
            if value is None or (isinstance(value, (str, dict)) and not value):
                raise InvalidInputError(f"metric {self.name!r} needs {_INPUT_NAMES[name]}: pass it in the sample")
        if "source_frames" in self.requires:
            check_clip(sample.source_frames, "source_frames", self.name)
            if len(sample.source_frames) != len(sample.frames):
                raise InvalidInputError(
                    f"metric {self.name!r}: the source video has {len(sample.source_frames)} frames and the edit "
                    f"{len(sample.frames)}: score an edit against the frames it was made from"
                )
        for index, image in sample.keyframes.items():
            if not 0 <= index < len(sample.frames):
                raise InvalidInputError(
                    f"metric {self.name!r}: keyframe index {index} is outside the clip's {len(sample.frames)} frames"
                )
            check_clip(image[None] if isinstance(image, np.ndarray) else image, f"keyframe {index}", self.name)

    def _score(self, sample: EditSample) -> float:
        raise NotImplementedError

    def _record(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        # Not `describe()`: a repr must not load the model or processor that the record reads.
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r}, batch_size={self.batch_size})"


def check_clip(frames: Any, name: str, metric: str) -> None:
    """A clip must be uint8 `(frames, height, width, 3)` with at least one frame."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise InvalidInputError(f"metric {metric!r}: `{name}` must be uint8 (frames, height, width, 3), got {got}")
    if len(frames) == 0:
        raise InvalidInputError(f"metric {metric!r}: `{name}` has no frames")


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` `(h, w, c)` resized to `(height, width)` (area filter: it averages when shrinking), if not already."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
