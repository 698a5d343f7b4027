"""ccedit itself as a method: an edit config (files plus `key=value` overrides) and one `EditSession` for all jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import asdict
from typing import Any

from ..config import EditJob, VideoConfig, load_edit_config
from ..errors import UserError
from .base import Method, MethodOutput


class CCEditMethod(Method):
    """Args:
        video: the frames to edit and their size; they replace the config's `video` section.
        config: edit config files (YAML), merged left to right over the defaults, as `ccedit edit --config`.
        overrides: `key=value` settings after them, e.g. `["sampling.seed=1", "model.path=models/ccedit"]`.
    """

    type = "ccedit"

    def __init__(self, video: VideoConfig, config: Sequence[str] = (), overrides: Sequence[str] = ()):
        from ..editing import EditSession

        super().__init__(video)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"method override {bad[0]!r} is not KEY=VALUE, e.g. sampling.seed=1")
        self.config_files = [str(Path(f)) for f in config]
        # The frame selection goes in as the last overrides, so the edit config's own checks see it with the rest.
        selection = [f"video.{k}={'null' if value is None else value}" for k, value in asdict(video).items()]
        self.cfg = load_edit_config(self.config_files, dotlist=[*overrides, *selection])
        self.session = EditSession(self.cfg)

    def describe(self) -> dict[str, Any]:
        # The merged settings, not the files: equal settings reached through different files give equal edits.
        cfg = self.cfg.to_dict()
        cfg["structure"].pop("cache_dir")
        cfg["structure"].pop("cache_max_gb")
        return {"type": self.type, "config": cfg}

    def prepare(self) -> None:
        self.session.pipe  # noqa: B018 - loading is the point
        self.session.annotators  # noqa: B018

    def run(self, job: EditJob, fields: Mapping[str, Any]) -> MethodOutput:
        result = self.session.edit(job)
        structure = result.maps[0].permute(0, 2, 3, 1).numpy() if result.maps else None
        return MethodOutput(
            frames=result.frames, fps=result.source.clip.fps, structure=structure,
            keyframes=dict(zip(result.keyframe_indices, result.keyframes)),
            seconds=result.timings["wall"], peak_memory_bytes=result.record.peak_memory_bytes,
        )
