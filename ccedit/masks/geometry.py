"""Source-pixel coordinates of a click or box -> the working size's pixels, through the frames' `FitRecord`.

A user clicks on the source video; the tracker sees the fitted frames. Fitting scales each axis (resized size over
source size), then crops (subtract the crop box's corner) or pads (add the picture's corner), as
`ccedit.io.resize.fit_frames` did to the frames.
"""

from __future__ import annotations

from ccedit.errors import UserError
from ccedit.io.resize import FitRecord


def _scale(fit: FitRecord) -> tuple[float, float]:
    return fit.resized_size[1] / fit.source_size[1], fit.resized_size[0] / fit.source_size[0]


def _offset(fit: FitRecord) -> tuple[int, int]:
    if fit.crop_box is not None:
        return -fit.crop_box[1], -fit.crop_box[0]
    if fit.pad_box is not None:
        return fit.pad_box[1], fit.pad_box[0]
    return 0, 0


def to_working(fit: FitRecord, x: float, y: float) -> tuple[float, float]:
    """The working-size position of source pixel `(x, y)` (no bounds check)."""
    (sx, sy), (dx, dy) = _scale(fit), _offset(fit)
    return x * sx + dx, y * sy + dy


def check_in_source(fit: FitRecord, spec: str, points: list[tuple[float, float]], corners: bool = False) -> None:
    """Refuse, in one line, a click (or, with `corners`, a box corner, which may lie on the far edge) outside the
    source frame."""
    height, width = fit.source_size
    inside = (lambda v, size: 0 <= v <= size) if corners else (lambda v, size: 0 <= v < size)
    for x, y in points:
        if not (inside(x, width) and inside(y, height)):
            limit = "<=" if corners else "<"
            raise UserError(
                f"mask {spec!r}: ({x:g}, {y:g}) is outside the {width}x{height} frame: give pixels with 0 <= x "
                f"{limit} {width} and 0 <= y {limit} {height}"
            )


def point_to_working(fit: FitRecord, spec: str, x: float, y: float) -> tuple[float, float]:
    """A click in source pixels -> working-size pixels; one line when it is outside the frame or cropped away."""
    check_in_source(fit, spec, [(x, y)])
    height, width = fit.target_size
    wx, wy = to_working(fit, x, y)
    if not (0 <= wx < width and 0 <= wy < height):
        raise UserError(
            f"mask {spec!r}: the click at ({x:g}, {y:g}) lies in the part of the frame cropped away to fit "
            f"{width}x{height}: click inside the kept picture, or edit in pad mode"
        )
    return wx, wy


def box_to_working(fit: FitRecord, spec: str, box: tuple[float, ...]) -> tuple[float, float, float, float]:
    """A box in source pixels -> working-size pixels, clipped to the kept picture; one line when a corner is
    outside the frame or the whole box is cropped away."""
    x0, y0, x1, y1 = box
    check_in_source(fit, spec, [(x0, y0), (x1, y1)], corners=True)
    height, width = fit.target_size
    (wx0, wy0), (wx1, wy1) = to_working(fit, x0, y0), to_working(fit, x1, y1)
    wx0, wy0, wx1, wy1 = max(wx0, 0), max(wy0, 0), min(wx1, width), min(wy1, height)
    if wx0 >= wx1 or wy0 >= wy1:
        raise UserError(
            f"mask {spec!r}: the box lies in the part of the frame cropped away to fit {width}x{height}: draw it "
            "inside the kept picture, or edit in pad mode"
        )
    return wx0, wy0, wx1, wy1
