"""Region masks: where an edit may act, per frame ("change only the dog").

`load_masks(spec, frames, fit, options, cache_dir) -> Masks` is the entry point: a spec (`PATH`, `IMAGE@K`,
`text:WORDS`, `point:K,x,y`, `box:K,x0,y0,x1,y1`) read from files or tracked by SAM 2 / SAM 3 video models, fitted
to the working size like the frames, cached, and shaped (invert, dilate, feather).

The names below load on first use, so the settings schema can read `MaskOptions`' defaults and the command line
can parse a spec without importing torch or the trackers.
"""

from importlib import import_module

_NAMES = {
    "load_masks": "loading", "MaskOptions": "options", "Masks": "result", "MaskSpec": "spec",
    "parse_mask_spec": "spec", "Sam2VideoTracker": "tracking", "Sam3VideoTracker": "tracking",
    "TrackPrompt": "tracking", "fill_region": "removal",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
