"""Short annotator names, as written in configs, resolved to classes by one explicit dict."""

from __future__ import annotations

from typing import Any

from ccedit.annotators.base import Annotator
from ccedit.annotators.canny import CannyEdges
from ccedit.annotators.depth import DPTDepth, MidasDepth, ZoeDepth
from ccedit.annotators.edges import LineartEdges, SoftEdges
from ccedit.registry import build_registered

ANNOTATORS: dict[str, type[Annotator]] = {
    cls.name: cls for cls in (CannyEdges, DPTDepth, MidasDepth, ZoeDepth, LineartEdges, SoftEdges)
}


def build_annotator(name: str, **kwargs: Any) -> Annotator:
    """Build the annotator registered as `name` with its constructor options.

    Args:
        name (`str`): One of `ANNOTATORS`: `canny`, `depth_dpt`, `midas`, `zoe`, `lineart`, `softedge`.
        **kwargs: Constructor options of that annotator (e.g. `low_threshold=50` for `canny`).

    Raises:
        `UserError`: for an unknown name or option, listing the valid ones; `ModelNotFoundError` (a `UserError`)
        when the annotator's weights cannot be found.

    Example:

    ```py
    >>> from ccedit.annotators import build_annotator
    >>> build_annotator("canny", low_threshold=50)
    CannyEdges(low_threshold=50, high_threshold=200)

    ```
    """
    return build_registered(ANNOTATORS, "annotator", name, kwargs)
