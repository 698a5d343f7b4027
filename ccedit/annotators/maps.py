"""Structure maps in their two forms, the checks at the annotator boundary, and the one conversion between them.

An annotator returns float maps in `[0, 1]` (the *unit* form, what a diffusers `ControlNetModel` takes). An edit
holds them as `uint8` (the *held* form: a quarter of float32's memory for a long clip), and the pipeline turns each
window's slice back into the unit form. `hold` is the only unit -> held conversion and refuses a tensor that is
already held; `as_unit` is the only held -> unit one. So a map is quantised once, to 256 levels, and a second
conversion (which would turn every non-zero level into 255) cannot happen silently.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

HELD_DTYPE = torch.uint8
HELD_LEVELS = 255


def is_held(maps: torch.Tensor) -> bool:
    return maps.dtype == HELD_DTYPE


def hold(maps: torch.Tensor) -> torch.Tensor:
    """Unit-form maps (float in `[0, 1]`) -> held form (`uint8`, level = round(value * 255)).

    Raises `TypeError` for maps already held (or of any non-float type): converting twice is a bug of the caller.
    """
    if is_held(maps):
        raise TypeError("structure maps are already held as uint8; hold() converts unit-form (float) maps once")
    if not maps.dtype.is_floating_point:
        raise TypeError(f"structure maps to hold must be float in [0, 1], got {maps.dtype}")
    return (maps.float().clamp(0, 1) * HELD_LEVELS).round().to(HELD_DTYPE)


def as_unit(maps: torch.Tensor, device=None, dtype=None) -> torch.Tensor:
    """Maps in either form -> unit form (float in `[0, 1]`), on `device` and in `dtype` (float32 by default for held
    maps; unit-form maps keep their dtype unless one is given)."""
    if is_held(maps):
        return maps.to(device=device, dtype=dtype or torch.float32) / HELD_LEVELS
    return maps.to(device=device, dtype=dtype)


def maps_problem(maps, num_frames: int, size: tuple[int, int]) -> str | None:
    """What is wrong with an annotator's output for `num_frames` frames of `size` (`(height, width)`), or None.

    The contract (`Annotator.__call__`): a float tensor `(frames, 1 or 3, height, width)`, finite, in `[0, 1]`.
    """
    if not isinstance(maps, torch.Tensor):
        return f"a {type(maps).__name__} instead of a tensor"
    if not maps.dtype.is_floating_point:
        return f"maps of dtype {str(maps.dtype).replace('torch.', '')} instead of float in [0, 1]"
    expected = (num_frames, 3, *size)
    if maps.ndim != 4 or maps.shape[1] not in (1, 3):
        return f"maps of shape {tuple(maps.shape)} instead of {expected}"
    if maps.shape[0] != num_frames:
        return f"{maps.shape[0]} maps for {num_frames} frames"
    if tuple(maps.shape[-2:]) != tuple(size):
        return f"maps of {maps.shape[-1]}x{maps.shape[-2]} for frames of {size[1]}x{size[0]}"
    finite = torch.isfinite(maps)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).nonzero()[0])
        return f"non-finite values (NaN or infinity) in the map of frame {bad}"
    low, high = float(maps.min()), float(maps.max())
    if low < 0 or high > 1:
        return f"values from {low:.4g} to {high:.4g}, outside [0, 1]"
    return None


def check_maps(name: str, maps, num_frames: int, size: tuple[int, int]) -> None:
    """Refuse, in one line naming the annotator, output that breaks the contract (`maps_problem`)."""
    problem = maps_problem(maps, num_frames, size)
    if problem is not None:
        raise UserError(
            f"structure annotator {name!r} returned {problem}: check its model and options (structure.options.{name})"
        )


def annotate(annotator, frames: np.ndarray) -> torch.Tensor:
    """Run `annotator` on `frames` and check its output, whatever class it is (`check_maps`); returns the maps as
    `(frames, 3, height, width)` float32 in `[0, 1]` on the CPU."""
    maps = annotator(frames)
    check_maps(getattr(annotator, "name", "") or type(annotator).__name__, maps, frames.shape[0], frames.shape[1:3])
    maps = maps.float().cpu()
    return maps.expand(-1, 3, -1, -1).contiguous() if maps.shape[1] == 1 else maps


def held_maps(annotator, frames: np.ndarray) -> torch.Tensor:
    """The checked maps of `frames` under `annotator`, held: the annotator boundary of an edit (and of training)."""
    return hold(annotate(annotator, frames))
