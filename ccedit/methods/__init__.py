"""Video-editing methods by name: how to build each from its options and run it on an edit job.

`build_method(type, **options)` resolves the names of `METHODS`; an unknown type or option is one line listing
the valid ones. ccedit itself (`ccedit`) loads its pipeline through `kinds.load_pipeline`; `folder`
scores results other tools wrote; `animatediff` and `wan_vace` run diffusers' own pipelines as baselines
(`diffusers_baselines`, `wan_vace`).
"""

from __future__ import annotations

from typing import Any

from ..registry import build_registered
from .base import Method, MethodOutput
from .ccedit_method import CCEditMethod
from .diffusers_baselines import AnimateDiffMethod
from .folder import ResultsFolderMethod
from .wan_vace import WanVACEMethod

METHODS: dict[str, type[Method]] = {
    cls.type: cls for cls in (CCEditMethod, ResultsFolderMethod, AnimateDiffMethod, WanVACEMethod)
}


def build_method(type: str, **options: Any) -> Method:
    """Build the method registered as `type` with its options; raises `UserError` naming the valid choices."""
    return build_registered(METHODS, "method type", type, options)


__all__ = ["METHODS", "Method", "MethodOutput", "build_method"]
