"""Structure maps from video frames (depth, Canny, lineart, soft edges) and an on-disk cache for them.

Frames in are uint8 numpy `(frames, height, width, 3)` RGB; maps out are float32 torch `(frames, 3, height, width)`
in `[0, 1]` at the input resolution, as a diffusers `ControlNetModel` consumes them (depth: normalised inverse
depth over the whole clip, near = 1; edges: white on black). Networks are imported only when an annotator that needs
them is built.
"""

from ccedit.annotators.base import Annotator
from ccedit.annotators.cache import StructureCache
from ccedit.annotators.canny import CannyEdges
from ccedit.annotators.depth import DPTDepth, MidasDepth, ZoeDepth, normalize_disparity, normalize_metric_depth
from ccedit.annotators.edges import LineartEdges, SoftEdges
from ccedit.annotators.registry import ANNOTATORS, build_annotator

__all__ = [
    "ANNOTATORS",
    "Annotator",
    "CannyEdges",
    "DPTDepth",
    "LineartEdges",
    "MidasDepth",
    "SoftEdges",
    "StructureCache",
    "ZoeDepth",
    "build_annotator",
    "normalize_disparity",
    "normalize_metric_depth",
]
