"""Which frame of a clip an edited image shows, found by structure: `--keyframe IMAGE@match`, `ccedit keyframe --match`
and the sidecar's check of every keyframe against the frame it was placed at.

An edit changes colours, textures and often shapes, but keeps the layout of the frame it started from. Each picture
is reduced to a soft edge map: the strongest colour gradient per pixel (the same for a picture and its colour
inversion or hue shift), scaled by its 99th percentile so contrast does not count, square-rooted so faint edges
count nearly as much as strong ones, and blurred so small shifts and redrawn details still overlap. The clip's mean
map is taken away from every map, so what every frame shares (a static background) does not dominate; the score of
a frame is the correlation of the image's map with the frame's: 1 for the same layout, about 0 for an unrelated
picture, negative for a frame whose moving parts lie elsewhere.

Neighbouring frames look alike, so the runner-up is the best frame of another part of the clip: one separated from
the best frame by a dip of the scores. A runner-up within `AMBIGUOUS_MARGIN` of the best makes the match ambiguous
(`ccedit edit` refuses to guess, `ccedit keyframe --match` names both); a best score under `WEAK_SCORE` matches no
frame (an image of another clip or of other frame settings scores about 0.1 to 0.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .config import KeyframeSpec
from .errors import UserError

logger = logging.getLogger(__name__)

ANALYSIS_SIDE = 128  # pixels of the longer side the maps are compared at: layout, not detail
BLUR_SIGMA = 2.0  # in analysis pixels
WEAK_SCORE = 0.3  # a best score under this matches no frame
AMBIGUOUS_MARGIN = 0.05  # a runner-up this close to the best makes the match ambiguous
SEPARATING_DIP = 0.05  # how far the scores must fall between two frames for them to be separate candidates


def structure_map(image: np.ndarray) -> np.ndarray:
    """The soft edge map of a uint8 `(H, W, 3)` picture at the analysis size, float32 `(h, w)`."""
    height, width = image.shape[:2]
    scale = ANALYSIS_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    # The strongest gradient over the colour channels, so edges between colours of equal brightness count too.
    dx = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0)).max(axis=2)
    dy = np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1)).max(axis=2)
    magnitude = np.hypot(dx, dy)
    magnitude = np.sqrt(np.minimum(magnitude / (np.percentile(magnitude, 99) + 1e-6), 1.0))
    return cv2.GaussianBlur(magnitude, (0, 0), BLUR_SIGMA)


def _unit(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 0 else centred


@dataclass(frozen=True)
class KeyframeMatch:
    """How well an image matches each frame of a clip, and how sure the best frame is."""

    scores: np.ndarray  # per frame, the correlation of structure maps
    best: int
    runner_up: int | None  # the best frame of another part of the clip; None when every other frame is on the
    # best frame's slopes

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best])

    @property
    def margin(self) -> float | None:
        return None if self.runner_up is None else self.best_score - float(self.scores[self.runner_up])

    @property
    def weak(self) -> bool:
        return self.best_score < WEAK_SCORE

    @property
    def ambiguous(self) -> bool:
        return self.margin is not None and self.margin < AMBIGUOUS_MARGIN

    @property
    def sure(self) -> bool:
        return not self.weak and not self.ambiguous

    def describe(self, image: str | Path) -> str:
        """One line: the frame, its score, the runner-up and the margin, and a verdict when the match is unsure."""
        count = len(self.scores)
        if self.weak:
            return (f"{image} matches none of the {count} frames clearly (best: frame {self.best}, structure match "
                    f"{self.best_score:.2f} < {WEAK_SCORE}): it may show another clip, or frames chosen with other "
                    f"video settings (num_frames, fps, start, size); write {image}@K if you know the frame")
        if self.ambiguous:
            other = float(self.scores[self.runner_up])
            return (f"{image} matches frames {self.best} and {self.runner_up} of {count} about equally (structure "
                    f"match {self.best_score:.2f} and {other:.2f}, margin {self.margin:.2f} < {AMBIGUOUS_MARGIN}): "
                    f"compare it with both (ccedit keyframe --index K) and write {image}@K")
        runner_up = ("no other part of the clip comes close" if self.runner_up is None else
                     f"runner-up frame {self.runner_up} at {float(self.scores[self.runner_up]):.2f}, margin "
                     f"{self.margin:.2f}")
        return f"{image} shows frame {self.best} of {count}: structure match {self.best_score:.2f} ({runner_up})"


class ClipStructure:
    """The structure maps of a clip's frames (at the working size), computed once, to match images against."""

    def __init__(self, frames: np.ndarray):
        maps = np.stack([structure_map(frame) for frame in frames])
        # Without the mean, a static background makes every frame look alike; a single frame has nothing to remove.
        self.mean = maps.mean(axis=0) if len(maps) > 1 else np.zeros_like(maps[0])
        self.frame_maps = np.stack([_unit(m - self.mean) for m in maps])

    def scores(self, image: np.ndarray) -> np.ndarray:
        """Per frame, the correlation of `image`'s structure (uint8, fitted to the working size) with the frame's."""
        wanted = _unit(structure_map(image) - self.mean)
        return np.einsum("thw,hw->t", self.frame_maps, wanted).astype(np.float64)

    def match(self, image: np.ndarray) -> KeyframeMatch:
        scores = self.scores(image)
        best = int(np.argmax(scores))
        return KeyframeMatch(scores, best, _runner_up(scores, best))


def _runner_up(scores: np.ndarray, best: int) -> int | None:
    """The highest-scoring frame separated from `best` by a dip: somewhere between them the scores fall at least
    SEPARATING_DIP below its own score (its neighbours on the best frame's slope never are)."""
    candidates = []
    for step in (1, -1):
        lowest = np.inf  # the lowest score strictly between `best` and the frame looked at
        frame = best + step
        while 0 <= frame < len(scores):
            if lowest <= scores[frame] - SEPARATING_DIP:
                candidates.append(frame)
            lowest = min(lowest, scores[frame])
            frame += step
    return max(candidates, key=lambda frame: scores[frame]) if candidates else None


def place_matched_keyframes(specs: list[KeyframeSpec], images: list[np.ndarray | None],
                            clip: ClipStructure | None) -> list[KeyframeSpec]:
    """`specs` with each `IMAGE@match` given the frame its image shows (said aloud); an unsure match is refused with
    the one line that says why and what to write instead. A keyframe placed by index whose image clearly shows
    another frame gets a warning. `images` are the specs' images at the working size (None for `auto`)."""
    placed = []
    for spec, image in zip(specs, images):
        if spec.match:
            found = clip.match(image)
            if not found.sure:
                raise UserError(f"--keyframe {spec.source}@match: {found.describe(spec.source)}")
            logger.warning("%s (--keyframe %s@match)", found.describe(spec.source), spec.source)
            spec = replace(spec, index=found.best, match=False)
        elif image is not None and spec.index is not None and clip is not None:
            _warn_if_elsewhere(spec, clip.match(image))
        placed.append(spec)
    return placed


def _warn_if_elsewhere(spec: KeyframeSpec, found: KeyframeMatch) -> None:
    count = len(found.scores)
    if not -count <= spec.index < count:
        return  # refused when the indices are resolved
    index = spec.index % count
    at_index = float(found.scores[index])
    if found.sure and abs(found.best - index) > 1 and found.best_score - at_index >= AMBIGUOUS_MARGIN:
        logger.warning("keyframe %s@%d looks like frame %d (structure match %.2f there, %.2f at frame %d): check "
                       "the frame, or write %s@match", spec.source, spec.index, found.best, found.best_score, at_index,
                       index, spec.source)


def match_record(clip: ClipStructure, image: np.ndarray, index: int) -> dict:
    """The sidecar's check of a keyframe placed at frame `index`: its structure match there (the score `--match`
    uses) and the frame it matches best."""
    found = clip.match(image)
    return {"score": float(found.scores[index]), "best_frame": found.best, "best_score": found.best_score}
