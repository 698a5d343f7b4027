"""What a user writes to say where an edit may act, parsed into a `MaskSpec` before any frame is read.

The forms (one string each, as given on a command line or in a config):

- `PATH`: a mask video, a folder of mask frames (one per clip frame) or one image used for every frame;
- `IMAGE@K`: a mask of clip frame K, tracked through the clip;
- `text:a brown dog`: every instance of the concept, found and tracked;
- `point:K,x,y`: a click on frame K at pixel (x, y) of the source frame, tracked;
- `box:K,x0,y0,x1,y1`: a box on frame K (corners in source pixels), tracked.

Frame indices count the edited clip's frames from 0. A malformed spec is one `UserError` line naming the form.
Whether the frame index lies inside the clip, the click inside the frame, or the path exists is checked where
those are known (`ccedit.masks.loading`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ccedit.errors import UserError

MaskKind = Literal["file", "image_at", "text", "point", "box"]
TRACKED_KINDS = ("image_at", "text", "point", "box")

FORMS = "PATH, IMAGE@K, text:WORDS, point:K,x,y or box:K,x0,y0,x1,y1"
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_POINT = re.compile(rf"^\s*(\d+)\s*,{_NUMBER},{_NUMBER}$")
_BOX = re.compile(rf"^\s*(\d+)\s*,{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$")
_IMAGE_AT = re.compile(r"^(.+)@(-?\d+)$")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask spec.

    Args:
        kind (`str`): `file`, `image_at`, `text`, `point` or `box`.
        text (`str`): The spec as written (for the sidecar and the cache key).
        path (`str`, *optional*): The mask file or folder (`file`, `image_at`).
        frame (`int`, *optional*): The clip frame the prompt is given on (`image_at`, `point`, `box`).
        prompt (`str`, *optional*): The concept to find (`text`).
        coordinates (`tuple[float, ...]`): `(x, y)` for `point`, `(x0, y0, x1, y1)` for `box`, in source pixels.
    """

    kind: MaskKind
    text: str
    path: str | None = None
    frame: int | None = None
    prompt: str | None = None
    coordinates: tuple[float, ...] = ()

    @property
    def is_tracked(self) -> bool:
        """Whether a video segmentation model makes the masks (everything but a mask file per frame)."""
        return self.kind in TRACKED_KINDS


def parse_mask_spec(text: str) -> MaskSpec:
    """Parse `text` (one of the forms in the module docstring) into a `MaskSpec`.

    Raises:
        `UserError`: an empty spec, an empty concept, malformed numbers, a negative frame or a box whose corners are
        not top-left then bottom-right.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"the mask spec is empty: give one of {FORMS}")
    raw = text.strip()
    head, _, rest = raw.partition(":")
    if head == "text":
        prompt = " ".join(rest.split())
        if not prompt:
            raise UserError(f"mask spec {raw!r} names no concept: write the words after 'text:', e.g. text:a brown dog")
        return MaskSpec("text", raw, prompt=prompt)
    if head == "point":
        match = _POINT.match(rest)
        if match is None:
            raise UserError(f"mask spec {raw!r} is not point:K,x,y (frame K, then the click's pixel x and y)")
        frame, x, y = int(match[1]), float(match[2]), float(match[3])
        return MaskSpec("point", raw, frame=frame, coordinates=(x, y))
    if head == "box":
        match = _BOX.match(rest)
        if match is None:
            raise UserError(f"mask spec {raw!r} is not box:K,x0,y0,x1,y1 (frame K, then the box's corners in pixels)")
        frame, box = int(match[1]), tuple(float(match[i]) for i in range(2, 6))
        if not (box[0] < box[2] and box[1] < box[3]):
            raise UserError(f"mask spec {raw!r}: the box needs x0 < x1 and y0 < y1 (top-left corner, then bottom-right)")
        return MaskSpec("box", raw, frame=frame, coordinates=box)
    match = _IMAGE_AT.match(raw)
    if match is not None:
        frame = int(match[2])
        if frame < 0:
            raise UserError(f"mask spec {raw!r}: frame {frame} is negative; frames count from 0")
        return MaskSpec("image_at", raw, path=match[1], frame=frame)
    return MaskSpec("file", raw, path=raw)
