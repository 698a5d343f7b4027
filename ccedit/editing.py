"""The `ccedit edit` and `ccedit keyframe` workflows: clip in, edited video plus a JSON sidecar out.

`EditSession` edits a job in memory (`EditResult`), `write_edit_outputs` publishes it as one set; `run_edit` is the
checks, the memory guard, one session edit and the write. What they are built from lives beside: the clip, keyframes
and maps in `preparation.py`, the model in `edit_model.py`, the sidecar in `edit_record.py`, the output names in
`outputs.py`, the memory guard in `memory_guard.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import EditConfig, EditJob, KeyframeSpec, hierarchical_setting, window_length
from .edit_checks import check_edit_request, check_keyframe_request, check_keyframe_specs, check_reference_setting
from .edit_model import check_model_reference, checked_structure_controlnets, load_edit_pipeline, model_conventions
from .guidance import sampled_prompt, structure_scales
from .edit_record import EditRecord, keyframe_entries, package_versions, video_entry
from .io import write_image
from .io.resize import FitRecord
from .memory_guard import check_memory_before_decoding
from .outputs import (
    auto_keyframe_path, comparison_panels, edit_output_paths, publish_edit_outputs, selected_extras, write_sidecar,
)
from .preparation import (  # noqa: F401 - load_keyframe re-exported for the methods
    PreparedClip, PreparedKeyframes, ReferenceImage, build_annotators, compute_structure, crop_frames, load_keyframe,
    output_crop, padded_content, prepare_clip, prepare_keyframes, prepare_masks, prepare_references, region_clip,
    resolve_keyframe_index,
)

if TYPE_CHECKING:
    from .keyframe_match import KeyframeMatch
    from .masks import Masks
    from .pipelines.pipeline_ccedit import CCEditPipelineOutput


@dataclass
class EditResult:
    """One finished edit, in memory: what `EditSession.edit` returns and `write_edit_outputs` publishes."""

    job: EditJob
    source: PreparedClip
    frames: np.ndarray  # uint8 (T, H, W, 3): the edited clip at the working size
    maps: list[torch.Tensor]  # per annotator, uint8 (T, 3, H, W)
    keyframes: list[np.ndarray]  # the keyframe images used (edited here for `auto`), one per job keyframe
    keyframe_indices: list[int]
    record: EditRecord  # the sidecar, without the output names (which only the writing step knows)
    started: float  # perf_counter at the start of the edit, for the wall time including the writing
    conditions: object = None  # `pipelines.recording.ConditionsRecord` when `output.conditions` asked for it
    masks: Masks | None = None  # a region edit's masks at the working size (`mask.spec`)

    @property
    def timings(self) -> dict:
        """Seconds per stage: the record's `timings_seconds` itself, which the later steps complete."""
        return self.record.timings_seconds


class EditSession:
    """An editor built once from a config: pipeline, annotators and structure cache, reused by every `edit(job)`.

    The pipeline and annotators load on the first edit, after that job's clip is read, so a clip that cannot be
    read fails before any model loads.
    """

    def __init__(self, cfg: EditConfig):
        self.cfg = cfg
        self._pipe = None
        self._annotators = None
        self.load_seconds = 0.0

    @property
    def device(self) -> torch.device:
        from .pipelines.loading import resolve_device

        return resolve_device(self.cfg.model.device)

    @property
    def pipe(self):
        if self._pipe is None:
            t0 = time.perf_counter()
            self._pipe = load_edit_pipeline(self.cfg, self.device)
            self.load_seconds += time.perf_counter() - t0
        return self._pipe

    @property
    def annotators(self):
        if self._annotators is None:
            self._annotators = build_annotators(self.cfg, self.device)
        return self._annotators

    def structure(self, frames: np.ndarray, fit: FitRecord | None = None) -> list[torch.Tensor]:
        """The configured structure maps of `frames`, as uint8 `(T, 3, H, W)` (cached by content and settings);
        in pad mode they are computed on the picture only (`padded_content`), so the letterbox makes no edges."""
        content = padded_content(fit) if fit is not None else None
        try:
            maps = compute_structure(frames, self.annotators, self.cfg.structure.cache_dir,
                                     self.cfg.structure.cache_max_gb, content=content)
        finally:
            for annotator in self._annotators or ():  # off the accelerator while the video model denoises
                if hasattr(annotator, "release"):
                    annotator.release()
        return maps

    def edit(self, job: EditJob, *, callback_on_step_end=None) -> EditResult:
        """Edit `job.input` with `job.prompt` (and its keyframes); nothing is written. `callback_on_step_end` is the
        pipeline's step-end callback (progress and cancelling for the job queue's callers)."""
        started = time.perf_counter()
        check_keyframe_specs(list(job.keyframes))
        check_reference_setting(self.cfg)
        # 1. Frames at the working size, the keyframes placed on them, the reference images fitted to them.
        prepared = prepare_clip(job.input, self.cfg)
        keyframes = prepare_keyframes(list(job.keyframes), prepared, self.cfg)
        references = prepare_references(self.cfg.sampling.references, prepared.size, self.cfg.video.resize_mode)
        # A region's masks, before any network (a tracker aside): a bad mask costs no model load.
        t0 = time.perf_counter()
        masks = prepare_masks(prepared, self.cfg, self.device, job.mask)
        timings = {"mask": time.perf_counter() - t0} if masks is not None else {}
        edited_clip = region_clip(prepared, masks, self.cfg)
        # 2. Model and structure maps; a missing ControlNet is refused before any model loads.
        checked_structure_controlnets(self.cfg)
        self.pipe  # noqa: B018 - the model loads here, after the clip is read and before the maps are timed
        t0 = time.perf_counter()
        maps = self.structure(edited_clip.frames, prepared.fit)
        timings["structure"] = time.perf_counter() - t0
        # 3. Keyframes left to ccedit are edited from the prompt, then everything is sampled.
        t0 = time.perf_counter()
        self._make_auto_keyframes(job, edited_clip, keyframes, maps)
        timings["auto_keyframes"] = time.perf_counter() - t0
        result = self._sample(job, edited_clip, keyframes, maps, masks, callback_on_step_end, references)
        edited = result.frames[0]
        timings.update(result.timings, wall=time.perf_counter() - started)
        record = self._record(job, prepared, keyframes, edited, result, timings, masks, references)
        return EditResult(job, prepared, edited, maps, keyframes.images, keyframes.indices, record, started,
                          result.conditions, masks)

    def prior(self, num_keyframes: int) -> str:
        """`sampling.prior` resolved: `auto` is CCEdit's anchor prior from keyframes that act, unless SDEdit
        starts from the source instead."""
        from .pipelines.conditions import keyframes_act

        s = self.cfg.sampling
        if s.prior != "auto":
            return s.prior
        if not model_conventions(self.cfg).anchor_prior:
            return "none"
        return "keyframe" if keyframes_act(num_keyframes, s.appearance_scale) and s.strength == 1 else "none"

    def _make_auto_keyframes(self, job: EditJob, prepared: PreparedClip, keyframes: PreparedKeyframes,
                             maps: list[torch.Tensor]) -> None:
        """Edit each `auto` keyframe's frame from the prompt, into `keyframes.images`."""
        s = self.cfg.sampling
        for i, (spec, index) in enumerate(zip(keyframes.specs, keyframes.indices)):
            if spec.is_auto:
                keyframes.images[i] = self.edit_frame(prepared.frames[index], [m[index] for m in maps], job.prompt,
                                                      s.auto_keyframe_strength, s.seed + 1 + i)

    def edit_frame(self, frame: np.ndarray, maps: list[torch.Tensor], prompt: str, strength: float,
                   seed: int) -> np.ndarray:
        """One frame edited from `prompt` (image-to-image under its structure maps, `pipelines.keyframe_edit`), as
        an `auto` keyframe is made: the edit and the studio's touch-ups alike."""
        s = self.cfg.sampling
        return self.pipe.edit_keyframe(
            sampled_prompt(self.cfg, prompt), frame, maps, negative_prompt=s.negative_prompt,
            strength=strength, num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
            structure_scale=structure_scales(self.cfg), generator=torch.Generator(device="cpu").manual_seed(seed),
        )

    def _sample(self, job: EditJob, prepared: PreparedClip, keyframes: PreparedKeyframes,
                maps: list[torch.Tensor], masks: Masks | None = None, callback_on_step_end=None,
                references: list[ReferenceImage] = ()) -> CCEditPipelineOutput:
        """The pipeline's edit of the clip with its maps, keyframes and reference images, in the configured windows
        (inside the region's soft mask only, when there is one)."""
        cfg, s = self.cfg, self.cfg.sampling
        prior = self.prior(len(keyframes.specs))
        # Only a model that takes reference images is given any (`check_reference_setting`).
        extra = {"reference_images": [r.image for r in references]} if references else {}
        return self.pipe(
            sampled_prompt(cfg, job.prompt), prepared.frames, maps,
            negative_prompt=s.negative_prompt, keyframe=keyframes.images or None,
            keyframe_index=keyframes.indices or None, num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale, structure_scale=structure_scales(cfg),
            appearance_scale=s.appearance_scale, prior=prior,
            prior_coefficient=s.prior_coefficient if prior != "none" else 0.0,
            strength=s.strength, generator=torch.Generator(device="cpu").manual_seed(s.seed),
            window_length=window_length(cfg), window_overlap=cfg.windows.overlap,
            hierarchical=hierarchical_setting(cfg), pin_keyframes=s.pin_keyframes, window_noise=cfg.windows.noise,
            record_conditions=cfg.output.conditions, mask=None if masks is None else masks.soft,
            callback_on_step_end=callback_on_step_end, **extra,
        )

    def _record(self, job: EditJob, prepared: PreparedClip, keyframes: PreparedKeyframes, edited: np.ndarray,
                result: CCEditPipelineOutput, timings: dict[str, float], masks: Masks | None = None,
                references: list[ReferenceImage] = ()) -> EditRecord:
        cfg = self.cfg
        return EditRecord(
            input=str(job.input), prompt=job.prompt, full_prompt=sampled_prompt(cfg, job.prompt),
            seed=cfg.sampling.seed,
            keyframes=keyframe_entries(keyframes.specs, keyframes.indices, keyframes.images,
                                       keyframes.clip_structure, edited),
            references=[r.entry() for r in references],
            prior=self.prior(len(keyframes.specs)), video=video_entry(prepared, edited),
            windows={"length": window_length(cfg), "overlap": cfg.windows.overlap, "per_pass": result.windows},
            mask=None if masks is None else masks.record,
            config=cfg.to_dict(), device=str(self.device), dtype=str(self.pipe.main_dtype).replace("torch.", ""),
            versions=package_versions(), timings_seconds=timings, peak_memory_bytes=result.peak_memory_bytes,
        )


def write_edit_outputs(result: EditResult, output: Path, cfg: EditConfig, *, overwrite: bool = False) -> dict:
    """Publish an edit as one set: the mp4, automatic keyframes, optional GIF / frames / side-by-side, and the
    sidecar last, so its presence means the set is complete (outputs.py). Returns the sidecar."""
    from .io import side_by_side, write_frames, write_gif, write_video

    extras = selected_extras(output, cfg)
    auto_paths = {i: auto_keyframe_path(output, index) for i, (spec, index)
                  in enumerate(zip(result.job.keyframes, result.keyframe_indices)) if spec.is_auto}
    outputs = {**{k: str(v) for k, v in extras.items() if v},
               **{f"keyframe{result.keyframe_indices[i]}": str(p) for i, p in auto_paths.items()}}
    record = result.record.published(output, outputs, auto_paths)
    fps = result.source.clip.fps
    crop = output_crop(result.source.fit)
    written = crop_frames(result.frames, crop)  # what the outputs show: the source's framing
    with publish_edit_outputs(output, cfg, overwrite=overwrite, extra_paths=list(auto_paths.values())) as stage:
        write_video(stage.path(output), written, fps)
        for i, path in auto_paths.items():
            write_image(stage.path(path), result.keyframes[i])
        if extras["gif"]:
            write_gif(stage.path(extras["gif"]), written, fps)
        if extras["frames"]:
            write_frames(stage.path(extras["frames"]), written)
        if extras["conditions"]:
            from .conditions_dump import write_conditions

            write_conditions(stage.path(extras["conditions"]), result.conditions, list(cfg.structure.annotators))
        if extras["side_by_side"]:
            names = cfg.structure.annotators
            panels, labels = comparison_panels(result.source.frames, list(zip(names, result.maps)),
                                               list(zip(result.keyframe_indices, result.keyframes)), result.frames,
                                               None if result.masks is None else result.masks.soft)
            panels = [crop_frames(panel, crop) for panel in panels]
            write_video(stage.path(extras["side_by_side"]), side_by_side(*panels, labels=labels), fps)
        # The sidecar's timings are the result's: the wall time counts the writing too.
        result.timings["wall"] = time.perf_counter() - result.started
        sidecar = record.to_json()
        write_sidecar(stage.path(edit_output_paths(output)["sidecar"]), sidecar)
    return sidecar


def run_edit(
    input_path: str | Path,
    prompt: str,
    output: Path,
    cfg: EditConfig,
    *,
    keyframes: list[KeyframeSpec] = (),
    overwrite: bool = False,
) -> dict:
    """Edit `input_path` with `prompt` into `output` (mp4) and its sidecar `output.json`; return the sidecar.

    `keyframes` are edited images (or `auto`: edited here from the prompt) with the frame each shows. One
    `EditSession.edit` of the job, then `write_edit_outputs`; the checks that need no frames come first.
    """
    job = EditJob(input=str(input_path), prompt=prompt, keyframes=list(keyframes), output=str(output))
    check_edit_request(input_path, output, cfg, overwrite=overwrite, keyframes=job.keyframes)
    check_model_reference(cfg)  # a model that cannot be found is said as such, not as its memory estimate
    check_memory_before_decoding(input_path, cfg, keyframes=job.keyframes)
    session = EditSession(cfg)
    result = session.edit(job)
    result.timings["model_load"] = session.load_seconds
    return write_edit_outputs(result, output, cfg, overwrite=overwrite)


def extract_keyframe(input_path: str | Path, output: Path, cfg: EditConfig, index: int | None, overwrite: bool) -> int:
    """Write exactly the frame an edit with the same settings would use as keyframe `index`; return the index."""
    check_keyframe_request(input_path, output, overwrite=overwrite)
    check_memory_before_decoding(input_path, cfg, with_model=False)
    prepared = prepare_clip(input_path, cfg)
    resolved = resolve_keyframe_index(index, prepared.frames.shape[0])
    write_image(output, prepared.frames[resolved])
    return resolved


def find_keyframe_frame(input_path: str | Path, image_path: str | Path, cfg: EditConfig) -> KeyframeMatch:
    """`ccedit keyframe --match IMAGE`: the frame of the edit's frames (the same settings select the same frames)
    that `image_path` shows."""
    from .io import fit_image, read_image
    from .keyframe_match import ClipStructure

    image = read_image(image_path)  # an unreadable image is refused before any frame is decoded
    check_memory_before_decoding(input_path, cfg, with_model=False)
    prepared = prepare_clip(input_path, cfg)
    # Fitted as an edit would fit it, so the frame's framing is compared; its size alone changes nothing here.
    fitted, _ = fit_image(image, prepared.size, cfg.video.resize_mode)
    return ClipStructure(prepared.frames).match(fitted)
