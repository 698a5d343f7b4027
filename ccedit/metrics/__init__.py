"""Video-editing metrics exactly as the public reference code defines them (METRICS.md beside the checkout).

Each metric is an object built from its options (model folder or hub id, device, batch size) that scores one
`EditSample` (edited frames, prompt, and where needed the source frames, source prompt or keyframes) to one float,
and whose `describe()` records the backbone, scale, pairing and resolution for results files. Models load on first
use. `build_metric(name, **options)` resolves the short names of `METRICS`.
"""

from ccedit.metrics.base import EditSample, Metric
from ccedit.metrics.clip import (
    ClipFrameConsecutive,
    ClipFrameConsistency,
    ClipTextAlignment,
    ClipTextAlignmentB32,
    EditSuccessRate,
    PickScore,
)
from ccedit.metrics.keyframe import KeyframeClipFidelity, KeyframeMSE
from ccedit.metrics.locality import LocalityChanged, LocalityClipText, LocalityPSNR, LocalitySSIM
from ccedit.metrics.registry import METRICS, build_metric
from ccedit.metrics.structure import StructureFidelity
from ccedit.metrics.warp import FlowWarpError, backward_warp, occlusion_mask, warp_error

__all__ = [
    "METRICS",
    "ClipFrameConsecutive",
    "ClipFrameConsistency",
    "ClipTextAlignment",
    "ClipTextAlignmentB32",
    "EditSample",
    "EditSuccessRate",
    "FlowWarpError",
    "KeyframeClipFidelity",
    "KeyframeMSE",
    "LocalityChanged",
    "LocalityClipText",
    "LocalityPSNR",
    "LocalitySSIM",
    "Metric",
    "PickScore",
    "StructureFidelity",
    "backward_warp",
    "build_metric",
    "occlusion_mask",
    "warp_error",
]
