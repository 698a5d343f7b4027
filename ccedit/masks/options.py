"""The settings of a region mask: how it is shaped for compositing and which models track it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ccedit.errors import UserError

# The released video segmentation models the trackers load by default.
SAM2_VIDEO_MODEL = "facebook/sam2.1-hiera-large"
SAM3_VIDEO_MODEL = "facebook/sam3"


@dataclass(frozen=True)
class MaskOptions:
    """How masks are shaped and tracked.

    Args:
        dilate (`int`, defaults to 0): Grow the hard mask by this many pixels (a disc), after `invert`.
        feather (`int`, defaults to 0): Width in pixels of the soft band outside the hard mask, where the soft mask
            falls linearly from 1 to 0, for compositing the edit into the source without a seam.
        invert (`bool`, defaults to `False`): Edit everything except the region.
        tracker (`str`): SAM 2 video model (folder or hub id) tracking a click, box or mask.
        text_tracker (`str`): SAM 3 video model (folder or hub id) finding and tracking a text concept.
        chunk_frames (`int`, defaults to 16): Frames a tracker holds prepared at once; bounds its memory for any
            clip length without changing its masks.
        device (`str`, defaults to `"cpu"`): Where the tracker runs.
    """

    dilate: int = 0
    feather: int = 0
    invert: bool = False
    tracker: str = SAM2_VIDEO_MODEL
    text_tracker: str = SAM3_VIDEO_MODEL
    chunk_frames: int = 16
    device: str = "cpu"

    def __post_init__(self):
        for name in ("dilate", "feather"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UserError(f"mask {name}={value!r} must be a whole number of pixels, 0 or more")
        if not isinstance(self.chunk_frames, int) or self.chunk_frames < 1:
            raise UserError(f"mask chunk_frames={self.chunk_frames!r} must be a whole number of frames, 1 or more")

    def shaping(self) -> dict[str, Any]:
        """The settings applied to a hard mask after it is read or tracked (never part of a tracking cache key)."""
        return {"dilate": self.dilate, "feather": self.feather, "invert": self.invert}

    def as_record(self) -> dict[str, Any]:
        return asdict(self)
