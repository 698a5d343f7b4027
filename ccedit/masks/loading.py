"""`load_masks`: a mask spec and the edit's fitted frames -> the `Masks` the edit composites with.

The one entry point for an edit: the spec is parsed (if given as text), checked against the clip (frame index,
click inside the frame) before any model loads, read from files or tracked (through the on-disk cache), refused in
one line when empty, then shaped (invert, dilate, feather).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ccedit.errors import UserError
from ccedit.io.resize import FitRecord
from ccedit.masks.cache import TrackedMaskSource, tracked_masks
from ccedit.masks.files import read_mask_frames, read_mask_image
from ccedit.masks.geometry import box_to_working, point_to_working
from ccedit.masks.options import MaskOptions
from ccedit.masks.result import Masks, coverage
from ccedit.masks.shaping import shape
from ccedit.masks.spec import MaskSpec, parse_mask_spec
from ccedit.masks.tracking import Sam2VideoTracker, Sam3VideoTracker, TrackPrompt, VideoTracker

logger = logging.getLogger(__name__)


def load_masks(
    spec: str | MaskSpec,
    frames: np.ndarray,
    fit: FitRecord,
    options: MaskOptions | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Masks:
    """The masks of `spec` for `frames`.

    Args:
        spec (`str` or `MaskSpec`): `PATH`, `IMAGE@K`, `text:WORDS`, `point:K,x,y` or `box:K,x0,y0,x1,y1`
            (`ccedit.masks.spec`); coordinates in source pixels.
        frames (`np.ndarray`): The edited clip at the working size, uint8 `(frames, height, width, 3)`.
        fit (`FitRecord`): How the frames were fitted from the source (`io.resize.fit_frames`); mask files and
            clicks are fitted the same way.
        options (`MaskOptions`, *optional*): Shaping and tracking settings; the defaults when not given.
        cache_dir (`str` or `os.PathLike`, *optional*): The structure cache's folder; tracked masks are stored in
            its `masks/` and reused. No cache when not given.

    Raises:
        `UserError`: a malformed spec, a frame outside the clip, a click or box outside the frame, a mask video
        shorter than the clip, an empty mask, or a tracker that cannot be found or loaded.
    """
    spec = parse_mask_spec(spec) if isinstance(spec, str) else spec
    options = options or MaskOptions()
    num_frames = len(frames)
    if spec.frame is not None and spec.frame >= num_frames:
        raise UserError(
            f"mask {spec.text!r} names frame {spec.frame}, but the clip has {num_frames} frames (0 to "
            f"{num_frames - 1}): give a frame inside the clip"
        )
    if spec.kind == "file":
        hard = read_mask_frames(spec.path, num_frames, fit)
        _check_not_empty(hard, f"mask {spec.path} is empty (no pixel at or above half brightness on any frame)")
    else:
        prompt = _prompt(spec, fit)
        tracker = _tracker(spec, options)
        hard = tracked_masks(frames, TrackedMaskSource(tracker, prompt, spec), cache_dir)
        found = f"nothing like {spec.prompt!r} was found in the clip" if spec.kind == "text" else (
            f"the tracker found no object at {spec.text!r} on any frame")
        _check_not_empty(hard, found)
    hard, soft = shape(hard, invert=options.invert, dilate_pixels=options.dilate, feather_pixels=options.feather)
    _check_not_empty(hard, f"mask {spec.text!r} inverted leaves nothing to edit")
    if hard.all():
        logger.warning("mask %r covers every pixel of every frame: the edit equals an unmasked one", spec.text)
    return Masks(soft=soft, hard=hard, record=_record(spec, options, hard))


def _check_not_empty(hard: np.ndarray, problem: str) -> None:
    if not hard.any():
        raise UserError(f"{problem}: give a mask that marks the region to edit")


def _prompt(spec: MaskSpec, fit: FitRecord) -> TrackPrompt:
    """The tracker's prompt in working-size pixels; a prompt mask must mark something."""
    if spec.kind == "text":
        return TrackPrompt(text=spec.prompt)
    if spec.kind == "point":
        return TrackPrompt(frame=spec.frame, point=point_to_working(fit, spec.text, *spec.coordinates))
    if spec.kind == "box":
        return TrackPrompt(frame=spec.frame, box=box_to_working(fit, spec.text, spec.coordinates))
    mask = read_mask_image(spec.path, fit)
    if not mask.any():
        raise UserError(f"mask {spec.path} is empty (no pixel at or above half brightness): mark the region to track")
    return TrackPrompt(frame=spec.frame, mask=mask)


def _tracker(spec: MaskSpec, options: MaskOptions) -> VideoTracker:
    if spec.kind == "text":
        return Sam3VideoTracker(options.text_tracker, options.device, options.chunk_frames)
    return Sam2VideoTracker(options.tracker, options.device, options.chunk_frames)


def _record(spec: MaskSpec, options: MaskOptions, hard: np.ndarray) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": spec.kind, "spec": spec.text}
    if spec.path is not None:
        source["path"] = spec.path
    if spec.frame is not None:
        source["frame"] = spec.frame
    if spec.prompt is not None:
        source["prompt"] = spec.prompt
    if spec.kind == "point":
        source["click"] = list(spec.coordinates)
    if spec.kind == "box":
        source["box"] = list(spec.coordinates)
    if spec.is_tracked:
        source["model"] = options.text_tracker if spec.kind == "text" else options.tracker
    return {"source": source, "options": options.shaping(), "coverage": coverage(hard)}
