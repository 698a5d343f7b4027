"""The method contract: a video editor built once from its options, run on one job at a time, kept in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..config import EditJob, VideoConfig


@dataclass
class MethodOutput:
    """One edit by a method.

    Args:
        frames: the edited clip, uint8 `(frames, height, width, 3)`.
        fps: its frame rate.
        structure: the structure map the method conditioned on, uint8 `(frames, height, width, 3)`, if any.
        keyframes: the keyframe images it used, by frame index.
        seconds: time spent editing (None for results made elsewhere).
        peak_memory_bytes: peak memory of the edit, if measured.
    """

    frames: np.ndarray
    fps: float
    structure: np.ndarray | None = None
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float | None = None
    peak_memory_bytes: int | None = None


class Method:
    """Base class of the methods: build from the evaluation's frame selection and options (cheap, checked), then
    `run(job, fields)` per edit.

    `video` is part of every method's contract, not an option: the frames, size and crop or pad that the
    evaluation's metrics see (its `video` section), which every method edits. A subclass takes it as its first
    constructor argument and passes it here.

    `fields` are the benchmark item's names (`video`, `edit`, `prompt`, `editing_type`, ...) for methods that find
    their results by a pattern. `describe()` is the resolved configuration: equal descriptions mean equal results,
    so an evaluation keys finished items by it. `item_inputs(job, fields)` adds what else a result depends on (a
    results file's fingerprint).
    """

    type: ClassVar[str] = ""

    def __init__(self, video: VideoConfig):
        self.video = video

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def item_inputs(self, job: EditJob, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def prepare(self) -> None:
        """Load what every edit needs (pipeline, annotators) now, so that a missing model fails before any edit;
        methods without models have nothing to load."""

    def run(self, job: EditJob, fields: Mapping[str, Any]) -> MethodOutput:
        raise NotImplementedError
