"""Masks tracked through a clip by video segmentation models: SAM 2 video for a click, box or mask on one frame
(propagated forward and backward from it), SAM 3 video for every instance of a text concept.

Both run through transformers (`Sam2VideoModel` / `Sam3VideoModel` and their processors) on the clip's frames at
the working size, so the masks come out at that size. Memory stays bounded for any clip length:

- transformers' inference session keeps every prepared frame (at the model's 1024 or 1008 square, float32: 12 MB a
  frame) in `processed_frames`. Here that mapping is a `ChunkedFrames`, which prepares `chunk_frames` frames at a
  time from the uint8 clip and holds one chunk;
- the session also keeps every tracked frame's outputs (memory features, masks). The models read only the
  conditioning frames and the `window` frames nearest the current one (`num_maskmem` memories and
  `max_object_pointers_in_encoder` object pointers), so older tracked outputs are dropped as tracking moves on.
  For SAM 2 the outputs within the window of the prompted frame are kept too, because backward tracking reads them.

Neither changes a mask: tests compare chunked and pruned tracking with transformers' own whole-clip session.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ccedit.annotators.loading import folder_fingerprint
from ccedit.errors import UserError, first_line, weights_load_error
from ccedit.hub import resolve_model_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackPrompt:
    """What a tracker is asked to follow, in working-size pixels.

    Args:
        frame (`int`, *optional*): The prompted frame (click, box, mask); `None` for a text concept.
        point (`tuple[float, float]`, *optional*): A positive click `(x, y)`.
        box (`tuple[float, float, float, float]`, *optional*): `(x0, y0, x1, y1)`.
        mask (`np.ndarray`, *optional*): A bool mask `(height, width)` of `frame`.
        text (`str`, *optional*): A concept whose every instance is tracked.
    """

    frame: int | None = None
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    text: str | None = None

    def record(self) -> dict[str, Any]:
        """JSON-ready description (the mask by its digest), for cache keys."""
        record = {"frame": self.frame, "point": self.point, "box": self.box, "text": self.text}
        if self.mask is not None:
            record["mask_sha256"] = hashlib.sha256(np.packbits(self.mask).tobytes()).hexdigest()
            record["mask_shape"] = list(self.mask.shape)
        return record


class ChunkedFrames(Mapping):
    """A tracker session's prepared frames, made `chunk_frames` at a time from the uint8 clip on first access.

    Only the chunk holding the frame asked for is kept, so a clip of any length holds at most `chunk_frames`
    prepared frames (`most_held` records the largest number held at once, `chunks_prepared` how often a chunk was
    made). Tracking walks the clip in order, forward or backward, so each chunk is made once per direction.

    Args:
        frames (`np.ndarray`): uint8 `(frames, height, width, 3)`.
        prepare (`Callable`): uint8 frames `(n, height, width, 3)` -> the model's pixel values `(n, 3, size, size)`.
        chunk_frames (`int`): Frames prepared at once.
    """

    def __init__(self, frames: np.ndarray, prepare: Callable[[np.ndarray], torch.Tensor], chunk_frames: int):
        self.frames = frames
        self.prepare = prepare
        self.chunk_frames = chunk_frames
        self.chunks_prepared = 0
        self.most_held = 0
        self._start: int | None = None
        self._chunk: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.frames)))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not isinstance(index, int) or not 0 <= index < len(self.frames):
            raise KeyError(index)
        start = index // self.chunk_frames * self.chunk_frames
        if start != self._start:
            self._chunk = None  # the previous chunk goes before the next is made
            self._chunk = self.prepare(self.frames[start : start + self.chunk_frames])
            self._start = start
            self.chunks_prepared += 1
            self.most_held = max(self.most_held, len(self._chunk))
        return self._chunk[index - start]


def prune_outputs(session, current: int, window: int, keep_near: int | None = None) -> int:
    """Drop the tracked (non-conditioning) outputs farther than `window` frames from `current`, except those within
    `window` of `keep_near` (the prompted frame, which backward tracking reads again); the number left."""
    left = 0
    for outputs in session.output_dict_per_obj.values():
        tracked = outputs["non_cond_frame_outputs"]
        for frame in [f for f in tracked if abs(f - current) > window]:
            if keep_near is None or abs(frame - keep_near) > window:
                del tracked[frame]
        left += len(tracked)
    return left


class VideoTracker:
    """Base of the trackers: a model reference resolved cheaply, the model and processor loaded on first use.

    Args:
        reference (`str`): A folder written by `save_pretrained` or a hub id.
        device (`str`): Where the model runs.
        chunk_frames (`int`): Frames prepared at once (`ChunkedFrames`).
    """

    what = ""
    option = ""

    def __init__(self, reference: str, device: str = "cpu", chunk_frames: int = 16):
        self.reference = reference
        self.device = torch.device(device)
        self.chunk_frames = chunk_frames
        self._folder = None
        self._model = None
        self._processor = None
        # The last run's frames and the most tracked outputs it held at once: its memory bound.
        self.last_frames: ChunkedFrames | None = None
        self.most_outputs_held = 0

    @property
    def folder(self):
        if self._folder is None:
            self._folder = resolve_model_folder(
                self.reference, self.what,
                hint=f"set the mask's {self.option} to a folder written by save_pretrained, or to a hub id",
            )
        return self._folder

    def identity(self) -> dict[str, Any]:
        """What makes this tracker's masks what they are, for cache keys: the reference and its files."""
        return {"tracker": self.what, "model": self.reference, "files": folder_fingerprint(self.folder)}

    def load(self) -> tuple[Any, Any]:
        """The model (on `device`, in eval mode) and its processor; one line when they cannot be loaded."""
        if self._model is None:
            try:
                model_class, processor_class = self._classes()
            except ImportError:  # an older transformers: its video segmentation models came later
                import transformers

                raise UserError(f"the {self.what} needs a newer transformers than {transformers.__version__}: "
                                "pip install -U transformers") from None
            folder = self.folder
            try:
                self._processor = processor_class.from_pretrained(str(folder))
                model = model_class.from_pretrained(str(folder))
            except Exception as error:  # a wrong or damaged folder: the user needs its name and the reason
                failure = weights_load_error(self.what, folder, error)
                if failure is not None:
                    raise failure from None
                raise UserError(
                    f"cannot load the {self.what} from {folder} ({first_line(error)}): set the mask's {self.option} "
                    "to a folder written by save_pretrained, or to a hub id"
                ) from None
            self._model = model.to(self.device).eval().requires_grad_(False)
        return self._model, self._processor

    def chunked(self, frames: np.ndarray) -> ChunkedFrames:
        _, processor = self.load()

        def prepare(chunk: np.ndarray) -> torch.Tensor:
            return processor.video_processor(videos=[list(chunk)], return_tensors="pt").pixel_values_videos[0]

        self.last_frames = ChunkedFrames(frames, prepare, self.chunk_frames)
        self.most_outputs_held = 0
        return self.last_frames

    def session(self, session_class: type, frames: np.ndarray):
        """A transformers video inference session over `frames`, its prepared frames held a chunk at a time."""
        session = session_class(video_height=frames.shape[1], video_width=frames.shape[2],
                                inference_device=self.device, inference_state_device=self.device,
                                video_storage_device="cpu", dtype=torch.float32)
        session.processed_frames = self.chunked(frames)
        return session

    def track(self, frames: np.ndarray, prompt: TrackPrompt) -> np.ndarray:
        """Bool masks `(frames, height, width)` of what `prompt` names, on every frame of `frames`."""
        with torch.inference_mode():
            return self._track(frames, prompt)

    def _classes(self) -> tuple[type, type]:
        raise NotImplementedError

    def _track(self, frames: np.ndarray, prompt: TrackPrompt) -> np.ndarray:
        raise NotImplementedError


class Sam2VideoTracker(VideoTracker):
    """A click, box or mask on one frame, tracked forward to the last frame and backward to the first (SAM 2)."""

    what = "SAM 2 video model"
    option = "tracker"

    def _classes(self):
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        return Sam2VideoModel, Sam2VideoProcessor

    def _track(self, frames: np.ndarray, prompt: TrackPrompt) -> np.ndarray:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        model, processor = self.load()
        height, width = frames.shape[1:3]
        session = self.session(Sam2VideoInferenceSession, frames)
        if prompt.mask is not None:
            processor.add_inputs_to_inference_session(session, frame_idx=prompt.frame, obj_ids=1,
                                                      input_masks=prompt.mask)
        elif prompt.box is not None:
            processor.add_inputs_to_inference_session(session, frame_idx=prompt.frame, obj_ids=1,
                                                      input_boxes=[[list(prompt.box)]])
        else:
            processor.add_inputs_to_inference_session(session, frame_idx=prompt.frame, obj_ids=1,
                                                      input_points=[[[list(prompt.point)]]], input_labels=[[[1]]])
        window = max(model.config.num_maskmem, model.config.max_object_pointers_in_encoder)
        logits = {}
        model(inference_session=session, frame_idx=prompt.frame)
        for reverse in (False, True):
            for output in model.propagate_in_video_iterator(session, start_frame_idx=prompt.frame, reverse=reverse):
                logits[output.frame_idx] = output.pred_masks.float().cpu()
                held = prune_outputs(session, output.frame_idx, window, keep_near=prompt.frame)
                self.most_outputs_held = max(self.most_outputs_held, held)
        hard = np.zeros((len(frames), height, width), dtype=bool)
        for frame, low_res in logits.items():
            full = processor.post_process_masks([low_res], original_sizes=[[height, width]], binarize=True)[0]
            hard[frame] = full.any(dim=0).reshape(height, width).numpy()  # the object's channels, any of them
        return hard


class Sam3VideoTracker(VideoTracker):
    """Every instance of a text concept, detected on each frame and tracked from the first frame on (SAM 3)."""

    what = "SAM 3 video model"
    option = "text_tracker"

    def _classes(self):
        from transformers import Sam3VideoModel, Sam3VideoProcessor

        return Sam3VideoModel, Sam3VideoProcessor

    def _track(self, frames: np.ndarray, prompt: TrackPrompt) -> np.ndarray:
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        model, processor = self.load()
        height, width = frames.shape[1:3]
        session = self.session(Sam3VideoInferenceSession, frames)
        processor.add_text_prompt(session, prompt.text)
        tracker = model.config.tracker_config
        window = max(tracker.num_maskmem, tracker.max_object_pointers_in_encoder)
        hard = np.zeros((len(frames), height, width), dtype=bool)
        for output in model.propagate_in_video_iterator(session, start_frame_idx=0):
            instances = processor.postprocess_outputs(session, output)["masks"]
            if len(instances):
                hard[output.frame_idx] = instances.any(dim=0).cpu().numpy()
            self.most_outputs_held = max(self.most_outputs_held, prune_outputs(session, output.frame_idx, window))
        return hard
