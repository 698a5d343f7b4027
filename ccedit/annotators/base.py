"""The `Annotator` contract: uint8 RGB frames in, `(frames, 3, height, width)` float maps in `[0, 1]` out."""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .maps import check_maps

logger = logging.getLogger(__name__)

# Bump when a change to the shared pre/post-processing changes the maps of every annotator, so that on-disk caches
# written by an older ccedit are not reused.
MAP_FORMAT_VERSION = 1


class Annotator:
    """Base class of the structure annotators: turns a clip into the maps a diffusers `ControlNetModel` consumes.

    Frames are processed `batch_size` at a time (a progress bar goes to stderr when there is more than one batch),
    then `_postprocess_clip` sees the raw maps of the whole clip at once, which is where depth annotators normalise
    over all frames instead of per frame. Subclasses implement `_annotate_batch` and, where needed,
    `_postprocess_clip`, `_move` and `_settings`.

    Args:
        batch_size (`int`, defaults to 8):
            Frames per forward pass. It changes speed and memory, never the maps.
        show_progress (`bool`, *optional*):
            Whether to show a progress bar; by default it is shown when the clip needs more than one batch.
    """

    name: ClassVar[str] = ""

    def __init__(self, batch_size: int = 8, show_progress: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._released = False  # networks parked on the CPU by `release()`, back on `device` at the next call

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """Compute the structure maps of a clip.

        Args:
            frames (`np.ndarray` of shape `(frames, height, width, 3)`, `uint8`):
                The clip, RGB, at the working resolution.

        Returns:
            `torch.Tensor` of shape `(frames, 3, height, width)`, `float32` on the CPU, values in `[0, 1]`.
        """
        check_frames(frames)
        if self._released:
            self._move(self.device, self.dtype)
            self._released = False
        num_frames, height, width = frames.shape[:3]
        show = self.show_progress if self.show_progress is not None else num_frames > self.batch_size

        maps = []
        # no_grad rather than inference_mode: inference tensors cannot be saved for backward, and a training loop
        # may feed these maps to a ControlNet whose weights require gradients.
        with (
            torch.no_grad(),
            tqdm(
                total=num_frames, desc=f"{self.name} maps", unit="frame", disable=not show, file=sys.stderr
            ) as progress,
        ):
            for start in range(0, num_frames, self.batch_size):
                batch = frames[start : start + self.batch_size]
                # Raw maps are gathered on the CPU in float32: a long clip should not pin accelerator memory, and
                # clip-level normalisation wants full precision.
                maps.append(self._annotate_batch(batch).float().cpu())
                progress.update(len(batch))
            clip_maps = self._postprocess_clip(torch.cat(maps))  # (T, C, H, W), C in {1, 3}

        # Rounding can carry a normalised map a hair past [0, 1]; anything else wrong is refused in one line.
        clip_maps = clip_maps.clamp(0.0, 1.0)
        check_maps(self.name, clip_maps, num_frames, (height, width))
        if clip_maps.shape[1] == 1:
            clip_maps = clip_maps.expand(-1, 3, -1, -1)
        return clip_maps.contiguous()

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Annotator:
        """Move the annotator's networks (if any) to `device` and cast them to `dtype`; returns `self`.

        Args:
            device (`str` or `torch.device`, *optional*): Where the networks run; unchanged when `None`.
            dtype (`torch.dtype`, *optional*): The networks' floating point type; unchanged when `None`.
        """
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            if not dtype.is_floating_point:
                raise ValueError(f"`dtype` must be a floating point type, got {dtype}")
            self.dtype = dtype
        self._move(self.device, self.dtype)
        self._released = False
        return self

    def release(self) -> None:
        """Park the networks on the CPU until the next call, which moves them back to `device`.

        An edit keeps its annotators for the next clip; on an accelerator their weights would otherwise sit beside
        the video model's while it denoises, memory the memory model does not count. Nothing to do on the CPU.
        """
        if self.device.type != "cpu" and not self._released:
            self._move(torch.device("cpu"), self.dtype)
            self._released = True

    def cache_key(self) -> dict[str, Any]:
        """The settings that determine this annotator's output, as a JSON-serialisable dict.

        Two annotators with equal keys produce the same maps for the same frames; `StructureCache` hashes this.
        Speed-only settings (batch size, device, progress bar) are left out.
        """
        return {"name": self.name, "format": MAP_FORMAT_VERSION, **self._settings()}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({settings})"

    # ----------------------------------------------------------------------------------------------------------------
    # Subclass hooks

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        """Raw maps `(b, 1 or 3, H, W)` for a `(b, H, W, 3)` uint8 batch, before clip-level post-processing."""
        raise NotImplementedError

    def _postprocess_clip(self, maps: torch.Tensor) -> torch.Tensor:
        """Post-processing that needs the whole clip `(T, C, H, W)` (e.g. depth normalisation); identity here."""
        return maps

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the networks; annotators without networks have nothing to move."""

    def _settings(self) -> dict[str, Any]:
        """Output-changing settings besides the name, for `cache_key` and `repr`."""
        return {}

    # ----------------------------------------------------------------------------------------------------------------
    # Helpers for subclasses

    def _frames_to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 `(b, H, W, 3)` -> `(b, 3, H, W)` in `[0, 1]` on the annotator's device and dtype."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return pixels.permute(0, 3, 1, 2).to(self.dtype) / 255.0


def check_frames(frames: Any) -> None:
    """Raise a `ValueError` naming what was passed unless `frames` is a uint8 `(T, H, W, 3)` numpy array, T >= 1."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"`frames` must be a numpy array of shape (frames, height, width, 3), got {type(frames)}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"`frames` must have shape (frames, height, width, 3) with frames >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"`frames` must be uint8 RGB, got dtype {frames.dtype}")


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad `(b, c, H, W)` on the bottom and right up to multiples of `multiple`; `crop` undoes it.

    Reflection keeps image statistics natural at the border (a replicated edge reads as a flat wall to a depth
    model); it needs the pad to be smaller than the image, so tiny images fall back to replication.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def fit_prediction(prediction: torch.Tensor, padded_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Bring a `(b, c, h, w)` prediction made on a padded input back to the frame size.

    A network may predict at a lower resolution than its input, so the prediction is first resized bilinearly to
    the padded input size, then the padding is cropped away.
    """
    if tuple(prediction.shape[-2:]) != tuple(padded_size):
        prediction = F.interpolate(prediction, size=padded_size, mode="bilinear", align_corners=False)
    return prediction[..., : size[0], : size[1]]
