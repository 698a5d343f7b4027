"""Short metric names, as written in configs, resolved to classes by one explicit dict."""

from __future__ import annotations

from typing import Any

from ccedit.registry import build_registered
from ccedit.metrics.base import Metric
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
from ccedit.metrics.structure import StructureFidelity
from ccedit.metrics.warp import FlowWarpError

METRICS: dict[str, type[Metric]] = {
    cls.name: cls
    for cls in (
        ClipTextAlignment,
        ClipTextAlignmentB32,
        ClipFrameConsistency,
        ClipFrameConsecutive,
        PickScore,
        EditSuccessRate,
        FlowWarpError,
        KeyframeMSE,
        KeyframeClipFidelity,
        StructureFidelity,
        LocalityPSNR,
        LocalitySSIM,
        LocalityChanged,
        LocalityClipText,
    )
}


def build_metric(name: str, **options: Any) -> Metric:
    """Build the metric registered as `name` with its options (`model`, `device`, `batch_size`, ...).

    Raises:
        `UserError`: for an unknown name or option, listing the valid ones; `ModelNotFoundError` (a `UserError`)
        for a model folder that does not exist or, offline, a hub id that is not cached.

    Example:

    ```py
    >>> from ccedit.metrics import build_metric
    >>> build_metric("keyframe_mse").describe()["higher_is_better"]
    False

    ```
    """
    return build_registered(METRICS, "metric", name, options)
