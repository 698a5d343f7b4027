"""Locality of region edits: does an edit change only the masked region, and does that region show the prompt?

Each metric reads `EditSample.mask`: bool or [0, 1] float `(frames, height, width)` at the edited frames' size,
true where the edit was allowed to act (a soft mask counts where it is above 0). The unedited region is what lies
outside the mask grown by `margin` pixels (a disc), so a feathered compositing band of up to `margin` pixels is
excluded; the edited region for CLIP is the mask shrunk by `margin`. Definitions follow the editing benchmarks'
background-preservation and edited-region scores (PIE-Bench), restated per video:

- `locality_psnr`: PSNR (dB) of the edited frames against the source over the unedited region of every frame:
  10 log10(1 / MSE) with RGB in [0, 1], the squared error averaged over those pixels, channels and frames
  together. Infinite when nothing there changed.
- `locality_ssim`: SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, per channel, as
  scikit-image computes it) of each frame against the source, its map averaged over the unedited region of every
  frame. The edited frame's excluded region (mask and margin) is first filled with the source's pixels, as the
  benchmarks blank it in both images, so windows at the region's edge see only unedited pixels: 1 when nothing
  outside changed.
- `locality_changed`: the fraction of unedited-region pixels (over all frames) where any channel differs from the
  source by more than `tolerance` levels of 255 (default 0: any change). Lower is better.
- `locality_clip_text`: CLIP-T inside the mask: 100 x cos(CLIP image, target prompt) on each frame's masked region
  (its bounding box cropped, pixels outside the mask in it black), averaged over frames whose region is not
  empty; ViT-L/14 as `clip_text`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ccedit.errors import InvalidInputError
from ccedit.masks.shaping import dilate
from ccedit.metrics.base import EditSample, Metric, fit_image
from ccedit.metrics.clip import ClipTextAlignment


def region_masks(sample: EditSample, margin: int, metric: str) -> np.ndarray:
    """The sample's mask as bool `(frames, height, width)`, checked against the edited frames."""
    mask = np.asarray(sample.mask)
    if mask.shape != sample.frames.shape[:3]:
        raise InvalidInputError(
            f"metric {metric!r}: the mask has shape {mask.shape}, the edited frames {sample.frames.shape[:3]}: give "
            "one mask per edited frame at their size"
        )
    return mask > 0 if mask.dtype != bool else mask


def _shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    return ~dilate(~mask, pixels)


class LocalityMetric(Metric):
    """Base of the outside-the-mask metrics: the unedited region and the source frames at the edit's size.

    Args:
        margin (`int`, defaults to 0): Pixels the mask is grown by before taking its outside (the feather band).
        device (`str`), batch_size (`int`): As every metric.
    """

    requires = ("source_frames", "mask")
    definition: ClassVar[str] = ""

    def __init__(self, margin: int = 0, device: str = "cpu", batch_size: int = 16):
        super().__init__(device=device, batch_size=batch_size)
        if margin < 0:
            raise InvalidInputError(f"metric {self.name!r}: `margin` must be 0 or more pixels, got {margin}")
        self.margin = margin

    def _inputs(self, sample: EditSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edited frames, source frames at their size, and the unedited region (bool); refuses an empty region."""
        outside = ~dilate(region_masks(sample, self.margin, self.name), self.margin)
        if not outside.any():
            raise InvalidInputError(f"metric {self.name!r}: the mask (grown by {self.margin} pixels) covers every "
                                    "pixel, so nothing is left to compare: lower `margin`")
        height, width = sample.frames.shape[1:3]
        source = np.stack([fit_image(frame, height, width) for frame in sample.source_frames])
        return sample.frames, source, outside

    def _record(self) -> dict[str, Any]:
        return {"backbone": None, "scale": self.definition, "pairing": "each edited frame with its source frame",
                "resolution": "the edited frames' size (source resized to it, area filter)",
                "region": f"outside the mask grown by {self.margin} pixels", "precision": "float64"}


class LocalityPSNR(LocalityMetric):
    """PSNR (dB) of the unedited region against the source, pooled over frames (module docstring)."""

    name = "locality_psnr"
    definition = "dB, 10 log10(1 / MSE) of RGB in [0, 1] over the unedited region; inf when unchanged"

    def _score(self, sample: EditSample) -> float:
        frames, source, outside = self._inputs(sample)
        error = (frames[outside].astype(np.float64) - source[outside]) / 255
        mse = float(np.mean(error**2))
        return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


class LocalitySSIM(LocalityMetric):
    """SSIM map of each frame against its source, averaged over the unedited region (module docstring)."""

    name = "locality_ssim"
    definition = "SSIM (Gaussian sigma 1.5, per channel) averaged over the unedited region; 1 when unchanged"

    def _score(self, sample: EditSample) -> float:
        from skimage.metrics import structural_similarity

        frames, source, outside = self._inputs(sample)
        total, count = 0.0, 0
        for edited, original, region in zip(frames, source, outside):
            edited = np.where(region[..., None], edited, original)  # the edit's own region never counts
            _, ssim_map = structural_similarity(original, edited, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, data_range=255, full=True)
            total += float(ssim_map.mean(axis=-1)[region].sum())
            count += int(region.sum())
        return total / count


class LocalityChanged(LocalityMetric):
    """Fraction of unedited-region pixels where any channel changed by more than `tolerance` (module docstring).

    Args:
        tolerance (`int`, defaults to 0): Largest per-channel difference (of 255) that is not a change.
        margin (`int`, defaults to 0), device, batch_size: As `LocalityMetric`.
    """

    name = "locality_changed"
    higher_is_better = False
    definition = "fraction of unedited-region pixels with any channel changed by more than the tolerance"

    def __init__(self, tolerance: int = 0, margin: int = 0, device: str = "cpu", batch_size: int = 16):
        super().__init__(margin=margin, device=device, batch_size=batch_size)
        if not 0 <= tolerance < 255:
            raise InvalidInputError(f"metric {self.name!r}: `tolerance` must be 0 to 254 levels, got {tolerance}")
        self.tolerance = tolerance

    def _score(self, sample: EditSample) -> float:
        frames, source, outside = self._inputs(sample)
        difference = np.abs(frames.astype(np.int16) - source.astype(np.int16)).max(axis=-1)
        return float((difference[outside] > self.tolerance).mean())

    def _record(self) -> dict[str, Any]:
        return {**super()._record(), "tolerance": self.tolerance}


class LocalityClipText(ClipTextAlignment):
    """CLIP-T of the masked region: its bounding box, pixels outside the mask black (module docstring).

    Args:
        margin (`int`, defaults to 0): Pixels the mask is shrunk by first (the feather band).
        model, processor, device, batch_size, dtype: As `clip_text`.
    """

    name = "locality_clip_text"
    requires = ("prompt", "mask")
    pairing = "each frame's masked region (bounding box, outside the mask black) with the target prompt"
    reference = "PIE-Bench edited-region CLIP similarity, per frame, mean over frames"

    def __init__(self, margin: int = 0, model: str | None = None, processor: str | None = None, device: str = "cpu",
                 batch_size: int = 16, dtype: str = "float32"):
        super().__init__(model=model, processor=processor, device=device, batch_size=batch_size, dtype=dtype)
        if margin < 0:
            raise InvalidInputError(f"metric {self.name!r}: `margin` must be 0 or more pixels, got {margin}")
        self.margin = margin

    def _score(self, sample: EditSample) -> float:
        inside = _shrink(region_masks(sample, self.margin, self.name), self.margin)
        crops = [masked_crop(frame, region) for frame, region in zip(sample.frames, inside) if region.any()]
        if not crops:
            raise InvalidInputError(f"metric {self.name!r}: the mask (shrunk by {self.margin} pixels) is empty on "
                                    "every frame: lower `margin`")
        images = self.clip.image_embeds(crops)
        text = self.clip.text_embeds([sample.prompt], truncate=False)
        return self.multiplier * (images @ text.T).mean().item()

    def _record(self) -> dict[str, Any]:
        return {**super()._record(), "region": f"inside the mask shrunk by {self.margin} pixels"}


def masked_crop(frame: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`frame`'s bounding box of `region`, with the pixels outside `region` black."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.where(region[box][..., None], frame[box], 0).astype(np.uint8)
