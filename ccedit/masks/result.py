"""The masks an edit receives, and the record of them its sidecar keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Masks:
    """Where an edit may act, per frame.

    Args:
        soft (`np.ndarray`): float32 `(frames, height, width)` in [0, 1]: 1 where the edit acts fully, the feathered
            band between 1 and 0, 0 where the source is kept; for compositing.
        hard (`np.ndarray`): bool `(frames, height, width)`: the shaped region itself (soft == 1).
        record (`dict`): For the sidecar: where the mask came from (`source`: file, image_at, text, point or box, with
            its path, frame, prompt, click or box), the options, and `coverage`: the hard mask's fraction of each
            frame.
    """

    soft: np.ndarray
    hard: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> list[float]:
        """The fraction of each frame inside the hard mask."""
        return coverage(self.hard)


def coverage(hard: np.ndarray) -> list[float]:
    """The fraction of each frame inside `hard` (bool `(frames, height, width)`), rounded to 6 places."""
    return [round(float(value), 6) for value in hard.reshape(len(hard), -1).mean(axis=1)]
