"""ccedit: controllable video editing with the CCEdit trident network on diffusers."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public classes, imported on first use so `import ccedit` (and `ccedit --help`) stays light. diffusers also
# resolves the components of a saved `CCEditPipeline` folder by `getattr(ccedit, class_name)`.
_LAZY = {
    "CCEditPipeline": "ccedit.pipelines.pipeline_ccedit",
    "CCEditPipelineOutput": "ccedit.pipelines.pipeline_ccedit",
    "CCEditTemporalAdapter": "ccedit.models.temporal_adapter",
    "AppearanceEncoder": "ccedit.models.appearance",
    "TridentModel": "ccedit.models.trident",
    "VideoUNet": "ccedit.models.video_unet",
    "DPMPP2SAncestralScheduler": "ccedit.schedulers.dpmpp_2s_ancestral",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ccedit' has no attribute {name!r}")
