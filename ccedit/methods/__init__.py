"""Video-editing methods by name: how to build each from its options and run it on an edit job.

`build_method(type, video, **options)` resolves the names of `METHODS`; an unknown type or option is one line
listing the valid ones. Every method receives the evaluation's frame selection (`video`) as part of its contract.
ccedit itself (`ccedit`) loads its pipeline through `kinds.load_pipeline`; `folder` scores results
other tools wrote; `animatediff` and `wan_vace` run diffusers' own pipelines as baselines (`diffusers_baselines`,
`wan_vace`).
"""

from __future__ import annotations

from typing import Any

from ..config import VideoConfig
from ..errors import UserError
from ..registry import build_registered
from .base import Method, MethodOutput
from .ccedit_method import CCEditMethod
from .diffusers_baselines import AnimateDiffMethod
from .folder import ResultsFolderMethod
from .wan_vace import WanVACEMethod

METHODS: dict[str, type[Method]] = {
    cls.type: cls for cls in (CCEditMethod, ResultsFolderMethod, AnimateDiffMethod, WanVACEMethod)
}


def build_method(type: str, video: VideoConfig, /, **options: Any) -> Method:
    """Build the method registered as `type` to edit the frames `video` selects, with its options; raises
    `UserError` naming the valid choices."""
    if "video" in options:
        raise UserError(f"method type {type!r}: `video` is not a method option; every method edits the frames of "
                        "the evaluation's `video` section, so set them there")
    return build_registered(METHODS, "method type", type, options, given={"video": video})


__all__ = ["METHODS", "Method", "MethodOutput", "build_method"]
