"""Region masks: where an edit may act, per frame ("change only the dog").

`load_masks(spec, frames, fit, options, cache_dir) -> Masks` is the entry point: a spec (`PATH`, `IMAGE@K`,
`text:WORDS`, `point:K,x,y`, `box:K,x0,y0,x1,y1`) read from files or tracked by SAM 2 / SAM 3 video models, fitted
to the working size like the frames, cached, and shaped (invert, dilate, feather).
"""

from ccedit.masks.loading import load_masks
from ccedit.masks.options import MaskOptions
from ccedit.masks.result import Masks
from ccedit.masks.spec import MaskSpec, parse_mask_spec
from ccedit.masks.tracking import Sam2VideoTracker, Sam3VideoTracker, TrackPrompt

__all__ = ["MaskOptions", "MaskSpec", "Masks", "Sam2VideoTracker", "Sam3VideoTracker", "TrackPrompt", "load_masks",
           "parse_mask_spec"]
