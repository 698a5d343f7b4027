"""What an edit records: `EditRecord`, the JSON sidecar written beside its outputs, field by field in the sidecar's
order, and the pieces it is made of (each keyframe's entry, the video's, the package versions).

The session makes the record in memory (`EditSession.edit`), without the output names, which only the writing step
knows (`EditRecord.published`); `to_json()` is the sidecar as written.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .config import KeyframeSpec
from .preparation import PreparedClip, crop_frames, output_crop

if TYPE_CHECKING:
    from .keyframe_match import ClipStructure


@dataclass(frozen=True, kw_only=True)
class EditRecord:
    """One edit's sidecar; the fields are its keys, in its order."""

    output: str | None = None
    """The mp4 written (None until the outputs are published)."""
    input: str
    """The clip edited, as given."""
    prompt: str
    """The job's prompt."""
    full_prompt: str
    """The prompt the networks saw: `sampling.add_prompt` before the job's."""
    seed: int
    """The seed of the edit's noise (`sampling.seed`)."""
    keyframes: list[dict[str, Any]]
    """Per job keyframe: its image, whether ccedit made it, its frame, its structure match and the output's PSNR."""
    references: list[dict[str, Any]] = field(default_factory=list)
    """Per reference image (`sampling.references`): its file and the size it had before it was fitted."""
    prior: str
    """The anchor prior used (`sampling.prior` with `auto` resolved)."""
    video: dict[str, Any]
    """The frames edited: their count, fps, source and working sizes, source indices, fit and output size."""
    windows: dict[str, Any]
    """The window length and overlap, and the windows of each pass."""
    mask: dict[str, Any] | None = None
    """A region edit's mask: where it came from (file, prompt, click or box; the tracker), its shaping, and the
    fraction of each frame it covers (None without a region)."""
    outputs: dict[str, str] | None = None
    """The optional outputs written beside the mp4, by kind (None until the outputs are published)."""
    config: dict[str, Any]
    """The edit's resolved settings."""
    device: str
    """The device the networks ran on."""
    dtype: str
    """The networks' precision."""
    versions: dict[str, str]
    """The versions of ccedit (and its commit when known), Python, torch, diffusers and transformers."""
    timings_seconds: dict[str, float]
    """Seconds per stage; `wall` is the whole edit and is brought up to date when the outputs are written."""
    peak_memory_bytes: int | None
    """The accelerator's peak memory during sampling (None where it is not measured)."""

    def published(self, output: Path, outputs: dict[str, str], keyframe_paths: dict[int, Path]) -> EditRecord:
        """The record with its output names: the mp4, the optional outputs and where each automatic keyframe (by
        its position in `keyframes`) was saved."""
        keyframes = [dict(k, path=str(keyframe_paths[i])) if i in keyframe_paths else k
                     for i, k in enumerate(self.keyframes)]
        return replace(self, output=str(output), outputs=outputs, keyframes=keyframes)

    def to_json(self) -> dict[str, Any]:
        """The sidecar's contents, in its key order."""
        return asdict(self)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def keyframe_entries(specs: list[KeyframeSpec], indices: list[int], images: list[np.ndarray],
                     clip_structure: ClipStructure, edited: np.ndarray) -> list[dict[str, Any]]:
    """The sidecar's entry of each keyframe (`EditRecord.keyframes`)."""
    from .keyframe_match import match_record

    return [
        {"path": spec.source, "auto": spec.is_auto, "index": index,
         # whether the keyframe shows the source frame it was placed at (the score --match uses)
         "match": match_record(clip_structure, images[i], index),
         # how closely the output shows the keyframe at its frame: as high wherever it was placed
         "output_psnr_db": psnr(edited[index], images[i])}
        for i, (spec, index) in enumerate(zip(specs, indices))
    ]


def video_entry(prepared: PreparedClip, edited: np.ndarray) -> dict[str, Any]:
    """The sidecar's description of the frames edited (`EditRecord.video`)."""
    clip = prepared.clip
    return {
        "num_frames": prepared.frames.shape[0], "fps": clip.fps, "source_fps": clip.source_fps,
        "source_size": list(clip.source_size), "working_size": list(prepared.size),
        "frame_indices": list(map(int, clip.indices)), "fit": asdict(prepared.fit),
        # the working size, less pad mode's letterbox: what the outputs show
        "output_size": list(crop_frames(edited[:1], output_crop(prepared.fit)).shape[1:3]),
    }


def package_versions() -> dict[str, str]:
    """The versions an edit records (`EditRecord.versions`), which `ccedit env` prints too."""
    import diffusers
    import torch
    import transformers

    versions = {"ccedit": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            versions["ccedit_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions
