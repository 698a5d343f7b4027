"""What an edit prepares before any network runs: the clip's frames at the working size, the keyframes' images and
frames, and the structure maps in their held form (the one place they are converted, `annotators.maps.held_maps`),
with pad mode's picture box and the crop its outputs use. `editing.py` runs the workflows on top of these.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import EditConfig, KeyframeSpec
from .io import fit_frames, fit_image, read_image, read_video, video_info
from .io.resize import FitRecord
from .io.video import VideoClip
from .selection import clip_working_size, selected_frame_count

if TYPE_CHECKING:
    from .keyframe_match import ClipStructure
    from .masks import Masks

logger = logging.getLogger(__name__)

# Source-size frames decoded at once before they are fitted: the memory guard counts this many.
DECODE_CHUNK_FRAMES = 32


@dataclass
class PreparedClip:
    clip: VideoClip
    frames: np.ndarray  # uint8 (T, H, W, 3) at the working size
    fit: FitRecord

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]


def prepare_clip(path: str | Path, cfg: EditConfig) -> PreparedClip:
    """Select the frames the edit uses and bring them to the working size (aspect kept, then crop or pad).

    Frames are fitted chunk by chunk as they are decoded, so a long clip is never held at its source size.
    Without `--frames` every frame from `--start` on is edited (at `--fps`).
    """
    v = cfg.video
    total, source_fps, source_size = video_info(path, folder_fps=v.folder_fps)
    size = clip_working_size(source_size, cfg)
    records: list[FitRecord] = []
    bar = tqdm(total=selected_frame_count(total, source_fps, cfg), desc="decoding frames", unit="frame",
               file=sys.stderr)

    def fit(chunk: np.ndarray) -> np.ndarray:
        frames, record = fit_frames(chunk, size, v.resize_mode)
        records.append(record)
        bar.update(len(chunk))
        return frames

    with bar:
        clip = read_video(path, num_frames=v.num_frames, fps=v.fps, start=v.start, folder_fps=v.folder_fps,
                          frame_transform=fit, chunk_size=DECODE_CHUNK_FRAMES)
    return PreparedClip(clip, clip.frames, records[0])


def resolve_keyframe_indices(specs: list[KeyframeSpec], num_frames: int) -> list[int]:
    """Each keyframe's clip frame (the default for one without an index, said aloud), checked once."""
    from .pipelines.conditions import check_keyframe_indices, default_keyframe_index

    indices = []
    for spec in specs:
        if spec.index is None:
            index = default_keyframe_index(num_frames)
            logger.warning("keyframe %s shows frame %d of %d (the centre frame); write %s@INDEX for another frame "
                           "(or %s@match to find it)", spec.source, index, num_frames, spec.source, spec.source)
        else:
            index = spec.index
        indices.append(index)
    return list(check_keyframe_indices(indices, num_frames))


def resolve_keyframe_index(index: int | None, num_frames: int) -> int:
    """The keyframe's clip frame: the default when `index` is None; negative indices count from the end."""
    from .pipelines.conditions import check_keyframe_indices, default_keyframe_index

    return check_keyframe_indices([default_keyframe_index(num_frames) if index is None else index], num_frames)[0]


@dataclass
class PreparedKeyframes:
    """A job's keyframes, placed on the clip's frames."""

    specs: list[KeyframeSpec]  # the job's, each `IMAGE@match` given the frame its image shows
    images: list[np.ndarray | None]  # uint8 (H, W, 3) at the working size; None for `auto` until it is made
    indices: list[int]  # each keyframe's clip frame
    clip_structure: ClipStructure | None  # the clip's structure, to place and check the keyframes (None without any)


def prepare_masks(prepared: PreparedClip, cfg: EditConfig, device, spec: str | None = None
                  ) -> Masks | None:
    """The region's masks (`spec`, else `mask.spec`) for the prepared frames, tracked masks through the structure
    cache; None without a region."""
    m = cfg.mask
    spec = spec if spec is not None else m.spec
    if spec is None:
        return None
    from .masks import MaskOptions, load_masks

    options = MaskOptions(dilate=m.dilate, feather=m.feather, invert=m.invert, tracker=m.tracker,
                          text_tracker=m.text_tracker, chunk_frames=m.chunk_frames, device=str(device))
    return load_masks(spec, prepared.frames, prepared.fit, options, cfg.structure.cache_dir)


def region_clip(prepared: PreparedClip, masks: Masks | None, cfg: EditConfig) -> PreparedClip:
    """The clip the networks edit: the prepared one, or with `mask.remove` its region filled from the surroundings
    (`masks.removal`), so neither the maps nor SDEdit see what is removed."""
    if masks is None or not cfg.mask.remove:
        return prepared
    from .masks import fill_region

    return replace(prepared, frames=fill_region(prepared.frames, masks.hard))


def prepare_keyframes(specs: list[KeyframeSpec], prepared: PreparedClip, cfg: EditConfig) -> PreparedKeyframes:
    """Read the keyframe images at the working size and place each on its frame: `IMAGE@match` by its structure,
    one placed by index checked against it, the default frame said aloud."""
    from .keyframe_match import ClipStructure, place_matched_keyframes

    images: list[np.ndarray | None] = [
        None if spec.is_auto else load_keyframe(spec.source, prepared.size, cfg.video.resize_mode) for spec in specs
    ]
    clip_structure = ClipStructure(prepared.frames) if specs else None
    placed = place_matched_keyframes(specs, images, clip_structure)
    return PreparedKeyframes(placed, images, resolve_keyframe_indices(placed, prepared.frames.shape[0]),
                             clip_structure)


def load_keyframe(path: str | Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """Read the edited keyframe; one of another size is fitted like the frames were, with a warning."""
    image = read_image(path)
    if image.shape[:2] != tuple(size):
        logger.warning(
            "keyframe %s is %dx%d, the edit works at %dx%d: resizing it (%s). Make it with `ccedit keyframe` to avoid this.",
            path, image.shape[1], image.shape[0], size[1], size[0], mode,
        )
        image, _ = fit_image(image, size, mode)
    return image


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image of the edit (`sampling.references`), fitted to the working size as the frames were."""

    path: str
    image: np.ndarray  # uint8 (H, W, 3) at the working size
    source_size: tuple[int, int]  # (width, height) of the file

    def entry(self) -> dict:
        """The sidecar's entry (`EditRecord.references`)."""
        return {"path": self.path, "source_size": list(self.source_size)}


def prepare_references(paths: list[str], size: tuple[int, int], mode: str) -> list[ReferenceImage]:
    """Each reference image read and fitted to the working `size` (`resize_mode` `mode`), as keyframes are."""
    references = []
    for path in paths:
        image = read_image(path)
        fitted = image if image.shape[:2] == tuple(size) else fit_image(image, size, mode)[0]
        references.append(ReferenceImage(str(path), fitted, (image.shape[1], image.shape[0])))
    return references


def build_annotators(cfg: EditConfig, device: torch.device):
    """One annotator per configured name; `depth` is the model's own depth estimator with CCEdit's normalisation."""
    from .annotators import build_annotator
    from .annotators.loading import LOCAL_FOLDER_ADVICE
    from .errors import ModelNotFoundError
    from .kinds import ModelRef, kind_for

    annotators = []
    for name in cfg.structure.annotators:
        options = dict(cfg.structure.options.get(name, {}) or {})
        try:
            if name == "depth":
                own = kind_for(cfg.model.path).depth_estimator(ModelRef.of(cfg.model))
                if own is not None:
                    options.setdefault("model", own)
                options.setdefault("preprocess", "ccedit")
                annotator = build_annotator("depth_dpt", **options)
            else:
                annotator = build_annotator(name, **options)
        except ModelNotFoundError as error:
            if not str(error).endswith(LOCAL_FOLDER_ADVICE):
                raise
            # The annotator knows its weights, the edit knows the setting that points it at a folder.
            raise ModelNotFoundError(f"{error} with structure.options.{name}.model=PATH") from None
        if "show_progress" not in options:
            annotator.show_progress = True  # a bar for this stage even when the clip fits one batch
        annotators.append(annotator.to(device) if hasattr(annotator, "to") else annotator)
    return annotators


def compute_structure(
    frames: np.ndarray, annotators, cache_dir: str | None, cache_max_gb: float | None = None,
    content: tuple[int, int, int, int] | None = None,
) -> list[torch.Tensor]:
    """Held (uint8) structure maps `(T, 3, H, W)` of `frames`, one tensor per annotator, through the cache if it has
    a folder. This is the one place an edit's maps are converted to their held form (`annotators.maps.hold`).

    `content` (`(top, left, height, width)`, the `pad_box` of pad mode) limits the annotators to the picture: the
    letterbox would otherwise become hard edges (or a depth step) in the maps, which the ControlNet would keep. The
    maps are padded back to the frame size with 0, the neutral value of every annotator (no edge; far away).
    """
    from .annotators import StructureCache
    from .annotators.maps import held_maps

    height, width = frames.shape[1:3]
    if content is not None:
        top, left, h, w = content
        frames = np.ascontiguousarray(frames[:, top : top + h, left : left + w])
    if cache_dir is None:
        maps = [held_maps(a, frames) for a in annotators]
    else:
        cache = StructureCache(cache_dir, max_bytes=None if cache_max_gb is None else int(cache_max_gb * 1e9))
        maps = [cache.get_or_compute(frames, a) for a in annotators]
    if content is not None:
        pad = (left, width - left - w, top, height - top - h)  # (left, right, top, bottom) for the last two dims
        maps = [torch.nn.functional.pad(m, pad, value=0) for m in maps]
    return maps


def padded_content(fit: FitRecord) -> tuple[int, int, int, int] | None:
    """The picture's box `(top, left, height, width)` when pad mode added a letterbox, else None."""
    if fit.pad_box is None or tuple(fit.pad_box[2:]) == tuple(fit.target_size):
        return None
    return tuple(fit.pad_box)


def output_crop(fit: FitRecord) -> tuple[int, int, int, int] | None:
    """The box of the edited frames that is written: pad mode's letterbox is cropped away, so the output keeps the
    source's framing. The sides are made even (yuv420p needs them), inside the picture."""
    box = padded_content(fit)
    if box is None:
        return None
    top, left, h, w = box
    return top, left, max(2, h - h % 2), max(2, w - w % 2)


def crop_frames(frames: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    if box is None:
        return frames
    top, left, h, w = box
    return np.ascontiguousarray(frames[:, top : top + h, left : left + w])
