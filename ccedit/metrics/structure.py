"""Structure fidelity: does the edit keep the source's structure, as seen by the annotator that guided it?"""

from __future__ import annotations

from typing import Any

import numpy as np

from ccedit.annotators import build_annotator
from ccedit.metrics.base import EditSample, Metric, fit_image


class StructureFidelity(Metric):
    """Mean squared difference between the structure maps (values in [0, 1]) of the edited clip and of the source
    clip, both computed by one of ccedit's annotators at the edited frames' size; 0 means identical structure.

    Depth maps are normalised per clip by the annotator, so a uniform shift in depth scale does not count.

    Args:
        annotator (`str`, defaults to `"canny"`): A name from `ccedit.annotators.ANNOTATORS`.
        annotator_options (`dict`, *optional*): Constructor options of that annotator (e.g. its model folder).
        device (`str`, defaults to `"cpu"`), batch_size (`int`, defaults to 16): frames per annotator pass.
    """

    name = "structure_mse"
    higher_is_better = False
    requires = ("source_frames",)

    def __init__(self, annotator: str = "canny", annotator_options: dict[str, Any] | None = None,
                 device: str = "cpu", batch_size: int = 16):
        super().__init__(device=device, batch_size=batch_size)
        self.annotator_name = annotator
        self.annotator_options = dict(annotator_options or {})
        self.annotator = build_annotator(annotator, batch_size=batch_size, **self.annotator_options)
        if self.device.type != "cpu":
            self.annotator.to(self.device)

    def _score(self, sample: EditSample) -> float:
        height, width = sample.frames.shape[1:3]
        source = np.stack([fit_image(frame, height, width) for frame in sample.source_frames])
        edited_maps = self.annotator(sample.frames)  # (frames, 3, height, width) in [0, 1]
        source_maps = self.annotator(source)
        return ((edited_maps - source_maps) ** 2).mean().item()

    def _record(self) -> dict[str, Any]:
        return {
            "backbone": f"ccedit annotator {self.annotator_name}",
            "annotator_options": self.annotator_options,
            "scale": "mean squared difference of maps in [0, 1]",
            "pairing": "each edited frame's map with its source frame's map, mean over frames and pixels",
            "resolution": "the edited frames' size (source resized to it, area filter)",
            "precision": "float32",
        }
