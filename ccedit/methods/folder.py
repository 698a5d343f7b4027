"""Results made by other tools (TokenFlow, RAVE, ...) as a method: a folder and a path pattern per edit."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import EditJob, VideoConfig
from ..errors import UserError
from ..io.paths import leaves_folder
from .base import Method, MethodOutput

# The names a pattern may use; the benchmark item supplies them.
PATTERN_FIELDS = ("video", "edit", "prompt", "source_prompt", "editing_type", "video_type", "fantasy_level")


class ResultsFolderMethod(Method):
    """Args:
        video: which frames of a result are read (`num_frames`, `fps`, `start`, `folder_fps`), as its source is
            read; a result of another size is fitted to the source's afterwards.
        root: the folder of results.
        pattern: the path of one result under `root`, a Python format string over `video`, `edit` (the edit's
            position among the video's edits), `prompt` (the target prompt), `source_prompt`, `editing_type`,
            `video_type` and `fantasy_level`; e.g. `"{video}/{edit}.mp4"` or `"{video}/{prompt}/output.mp4"`.
            A result is a video file or a folder of frames.
    """

    type = "folder"

    def __init__(self, video: VideoConfig, root: str, pattern: str):
        super().__init__(video)
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
        unknown = sorted({n for n in names if n not in PATTERN_FIELDS})
        if unknown or not names:
            raise UserError(f"results pattern {pattern!r}: use fields {', '.join(PATTERN_FIELDS)} "
                            f"(got {', '.join(unknown) or 'none'})")
        # The pattern's own text, each field standing for a plain name: where the pattern leads whatever the fields.
        parts = string.Formatter().parse(pattern)
        literal = "".join(text + ("x" if name is not None else "") for text, name, _, _ in parts)
        if leaves_folder(literal):
            raise UserError(f"results pattern {pattern!r} leads outside the results folder (an absolute path, `~` or "
                            "`..`): write it relative to `root`, e.g. \"{video}/{edit}.mp4\"")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"results folder not found: {self.root}; check the method's `root`")
        self.pattern = pattern
        self.selection = {"num_frames": video.num_frames, "fps": video.fps, "start": video.start,
                          "folder_fps": video.folder_fps}

    def path(self, fields: Mapping[str, Any]) -> Path:
        """The result of one edit; one whose fields (a prompt with `../`) lead outside `root` is refused."""
        relative = self.pattern.format(**{k: fields.get(k) for k in PATTERN_FIELDS})
        if leaves_folder(relative):
            raise UserError(f"the result path {relative!r} (pattern {self.pattern!r}) leads outside the results "
                            f"folder {self.root}: this edit's fields cannot name a result there")
        return self.root / relative

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "root": str(self.root.resolve()), "pattern": self.pattern, **self.selection}

    def item_inputs(self, job: EditJob, fields: Mapping[str, Any]) -> dict[str, Any]:
        # A result replaced in place is scored again.
        from ..io.fingerprint import file_fingerprint

        return {"result": file_fingerprint(self.path(fields))}

    def run(self, job: EditJob, fields: Mapping[str, Any]) -> MethodOutput:
        from ..io import read_video

        path = self.path(fields)
        if not path.exists():
            raise UserError(f"no result at {path} (pattern {self.pattern!r})")
        clip = read_video(path, **self.selection)
        # Made elsewhere: its editing time and memory are unknown here.
        return MethodOutput(frames=clip.frames, fps=clip.fps)

