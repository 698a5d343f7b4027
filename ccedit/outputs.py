"""An edit's output set: the names next to `-o`, the destination check before the work, the side-by-side's panels,
the sidecar's JSON, and publishing them.

The one place that knows which files an edit writes for an output `o.mp4`: `o.mp4`, `o.gif`,
`o.side_by_side.mp4`, `o_frames/`, `o.conditions/` and the sidecar `o.mp4.json`. Publishing goes through
`io.publish`, so the set appears all together, the sidecar last, and replaces an earlier set as a whole (see
docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import EditConfig, KeyframeSpec
from .errors import UserError
from .io.atomic import atomic_path
from .io.publish import Stage, check_destination, publish_set

if TYPE_CHECKING:
    import torch

EXTRAS = ("gif", "side_by_side", "frames", "conditions")
FOLDER_EXTRAS = ("frames", "conditions")
# Rough compressed size per raw RGB byte, on the generous side for noisy content: H.264 at crf 18, a palette GIF,
# PNG frames. Only used to refuse early when the disk clearly cannot take the outputs.
# The conditions dump writes each map once per window that holds its frame (overlaps about double that).
_BYTES_PER_RAW_BYTE = {"video": 0.2, "gif": 0.45, "side_by_side": 0.3, "frames": 0.8, "conditions": 2.0}
_SIDECAR_BYTES = 64 * 1024


def edit_output_paths(output: Path) -> dict[str, Path]:
    """Every path an edit to `output` may write, by kind: video, gif, side_by_side, frames, conditions, sidecar."""
    return {
        "video": output,
        "gif": output.with_suffix(".gif"),
        "side_by_side": output.with_name(output.stem + ".side_by_side.mp4"),
        "frames": output.with_name(output.stem + "_frames"),
        "conditions": output.with_name(output.stem + ".conditions"),
        "sidecar": output.with_name(output.name + ".json"),
    }


def selected_extras(output: Path, cfg: EditConfig) -> dict[str, Path | None]:
    """The optional outputs `cfg.output` asks for (None for those it does not)."""
    paths = edit_output_paths(output)
    return {kind: paths[kind] if getattr(cfg.output, kind) else None for kind in EXTRAS}


def auto_keyframe_path(output: Path, index: int) -> Path:
    """Where `--keyframe auto` saves the keyframe it made for frame `index`, beside the output."""
    return output.with_name(f"{output.stem}.keyframe{index}.png")


def check_edit_destination(input_path: str | Path, output: Path, cfg: EditConfig, *, overwrite: bool,
                           keyframes: Sequence[KeyframeSpec] = ()) -> None:
    """One line and exit 2, before any frame is decoded or model loaded, for a destination that cannot work.

    The automatic keyframes' PNGs are checked too: their frames follow from the clip's header (the default one is
    the centre of the frames the edit selects)."""
    paths = edit_output_paths(output)
    extras = selected_extras(output, cfg)
    targets = [output, *auto_keyframe_paths(input_path, output, cfg, keyframes), *[p for p in extras.values() if p],
               paths["sidecar"]]
    check_destination(targets, overwrite=overwrite, folders=[extras[kind] for kind in FOLDER_EXTRAS if extras[kind]],
                      estimate_bytes=estimate_edit_bytes(input_path, cfg))


def auto_keyframe_paths(input_path: str | Path, output: Path, cfg: EditConfig,
                        keyframes: Sequence[KeyframeSpec]) -> list[Path]:
    """The PNGs the automatic keyframes of an edit will be saved as; none when the clip's header cannot be read
    (the reader says why a moment later)."""
    if not any(spec.is_auto for spec in keyframes):
        return []
    num_frames = selected_count(input_path, cfg)
    if not num_frames:
        return []
    from .preparation import resolve_keyframe_index

    return [auto_keyframe_path(output, resolve_keyframe_index(spec.index, num_frames))
            for spec in keyframes if spec.is_auto]


def selected_count(input_path: str | Path, cfg: EditConfig) -> int:
    """How many frames an edit of `input_path` selects, from the clip's header; 0 when it cannot be read."""
    from .selection import selected_frame_count
    from .io import video_info

    try:
        total, source_fps, _ = video_info(input_path, folder_fps=cfg.video.folder_fps)
    except (UserError, ValueError):
        return 0
    return selected_frame_count(total, source_fps, cfg)


def estimate_edit_bytes(input_path: str | Path, cfg: EditConfig) -> int:
    """A rough size of an edit's outputs from the clip's header and the settings; 0 when the clip cannot be read
    (the read itself reports that, in its own words, a moment later)."""
    from .selection import clip_working_size, selected_frame_count
    from .io import video_info

    try:
        total, source_fps, source_size = video_info(input_path, folder_fps=cfg.video.folder_fps)
        height, width = clip_working_size(source_size, cfg)
    except (UserError, ValueError):
        return 0
    # Without --frames the whole clip from --start is edited, at --fps.
    raw = max(1, selected_frame_count(total, source_fps, cfg)) * height * width * 3
    kinds = ["video", *[kind for kind in EXTRAS if getattr(cfg.output, kind)]]
    return int(sum(_BYTES_PER_RAW_BYTE[kind] * raw for kind in kinds)) + _SIDECAR_BYTES


@contextlib.contextmanager
def publish_edit_outputs(
    output: Path, cfg: EditConfig, *, overwrite: bool, extra_paths: list[Path] = ()
) -> Iterator[Stage]:
    """Stage an edit's outputs (write each to `stage.path(final_path)`), then publish them as one set.

    With `overwrite`, every existing member of the earlier set is replaced, including optional outputs this run
    does not write (an old GIF never stays next to a new video). `extra_paths` are further outputs of this run
    beside `output` (the keyframes `--keyframe auto` made).
    """
    paths = edit_output_paths(output)
    extras = [p for p in selected_extras(output, cfg).values() if p]
    with publish_set([output, *extra_paths, *extras, paths["sidecar"]], overwrite=overwrite,
                     replaces=[paths[kind] for kind in EXTRAS]) as stage:
        yield stage


def write_sidecar(path: Path, sidecar: dict[str, Any]) -> None:
    """The sidecar as indented JSON, written atomically (values JSON cannot hold are written as text)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, default=str) + "\n")


# The side-by-side's mask panel: the region tinted this colour at this opacity over the source.
MASK_TINT = np.array([255, 40, 40], dtype=np.float32)
MASK_OPACITY = 0.5


def mask_overlay(source: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """uint8 `(T, H, W, 3)`: the source with a region's soft mask (`(T, H, W)` in [0, 1]) tinted over it."""
    alpha = (MASK_OPACITY * soft)[..., None]
    return np.round(source * (1 - alpha) + MASK_TINT * alpha).astype(np.uint8)


def comparison_panels(
    source: np.ndarray,
    maps: list[tuple[str, torch.Tensor]],
    keyframes: list[tuple[int, np.ndarray]],
    edited: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """The side-by-side's panels and labels: the source, a region edit's mask tinted over the source (`mask`: the
    soft mask), every structure map (by annotator), every keyframe (held still for the whole clip, labelled with
    its frame) and the result, all uint8 `(T, H, W, 3)`."""
    panels, labels = [source], ["source"]
    if mask is not None:
        panels.append(mask_overlay(source, mask))
        labels.append("mask")
    for name, m in maps:
        panels.append(m.permute(0, 2, 3, 1).numpy())
        labels.append(name)
    for index, image in sorted(keyframes, key=lambda pair: pair[0]):
        panels.append(np.broadcast_to(image[None], source.shape))
        labels.append(f"keyframe {index}")
    panels.append(edited)
    labels.append("result")
    return panels, labels
