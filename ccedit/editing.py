"""The `ccedit edit` and `ccedit keyframe` workflows: clip in, edited video plus a JSON sidecar out."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import __version__
from .config import (  # noqa: F401 - KeyframeSpec re-exported
    AUTO_KEYFRAME, BUILTIN_MODELS, NAMED_MODELS, EditConfig, EditJob, KeyframeSpec, structure_controlnets,
)
from .edit_checks import check_edit_request, check_keyframe_request, check_keyframe_specs
from .errors import UserError
from .guidance import sampled_prompt, structure_scales
from .io import atomic_path, video_info, write_image
from .io.resize import FitRecord
from .outputs import auto_keyframe_path, edit_output_paths, publish_edit_outputs, selected_extras
from .preparation import (  # noqa: F401 - re-exported: the workflows' building blocks
    PreparedClip,
    build_annotators,
    compute_structure,
    crop_frames,
    load_keyframe,
    output_crop,
    padded_content,
    prepare_clip,
    resolve_keyframe_index,
    resolve_keyframe_indices,
)
from .selection import clip_working_size, selected_frame_count  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .keyframe_match import KeyframeMatch

logger = logging.getLogger(__name__)


def check_memory_before_decoding(
    input_path: str | Path, cfg: EditConfig, *, keyframes: list[KeyframeSpec] = (), with_model: bool = True
) -> None:
    """Refuse with one line, before any frame is decoded, an edit whose memory exceeds what the machine has: the
    networks' from the memory model (`plan.estimate_network_memory`), the frames' and maps' from the clip's header
    (`resources.py`); `model.check_memory=false` (--force) skips it. A clip that cannot be read is left to the
    reader, which says why in its own words.

    `keyframes` are the job's keyframe specs: only whether there are any matters here (with them the keyframe model
    runs its appearance branch); the frames they show are resolved after decoding and are not needed.
    `with_model=False` (`ccedit keyframe`) only decodes and fits the frames: no network is traced.
    """
    from .resources import available_device_memory, available_host_memory, check_memory, edit_memory_need

    if not cfg.model.check_memory:
        return
    try:
        total, source_fps, source_size = video_info(input_path, folder_fps=cfg.video.folder_fps)
    except UserError:
        return
    size = clip_working_size(source_size, cfg)
    num_frames = selected_frame_count(total, source_fps, cfg)
    if num_frames == 0:
        return
    network, device = None, None
    if with_model:
        from .pipelines.loading import resolve_device
        from .plan import estimate_network_memory

        device = resolve_device(cfg.model.device)
        network = estimate_network_memory(cfg, num_frames=num_frames, height=size[0], width=size[1],
                                          keyframes=keyframes, device=device)
    need = edit_memory_need(network, num_frames=num_frames, size=size, source_size=source_size,
                            num_maps=len(cfg.structure.annotators))
    check_memory(need, available_host_memory(), available_device_memory(device) if need.device else None)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def package_versions() -> dict[str, str]:
    import diffusers
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


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


@dataclass
class EditResult:
    """One finished edit, in memory: what `EditSession.edit` returns and `write_edit_outputs` publishes.

    `record` is the sidecar without the output names (which only the writing step knows); `timings` is the same
    dict as `record["timings_seconds"]`.
    """

    job: EditJob
    source: PreparedClip
    frames: np.ndarray  # uint8 (T, H, W, 3): the edited clip at the working size
    maps: list[torch.Tensor]  # per annotator, uint8 (T, 3, H, W)
    keyframes: list[np.ndarray]  # the keyframe images used (edited here for `auto`), one per job keyframe
    keyframe_indices: list[int]
    record: dict
    started: float  # perf_counter at the start of the edit, for the wall time including the writing
    conditions: object = None  # `pipelines.recording.ConditionsRecord` when `output.conditions` asked for it

    @property
    def timings(self) -> dict:
        return self.record["timings_seconds"]


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

    def structure_controlnets(self) -> list[str | None]:
        """One ControlNet per annotator (None: the model's own), refused at once when the model has too few."""
        nets = structure_controlnets(self.cfg)
        if nets.count(None) > 1:
            raise UserError(
                f"{len(nets)} structure annotators need {len(nets)} ControlNets but the model has one: add the "
                "others with structure.controlnets=[null,<path or hub id>]"
            )
        return nets

    @property
    def pipe(self):
        if self._pipe is None:
            from .pipelines.loading import load_pipeline, offloads

            cfg = self.cfg
            if cfg.model.path in BUILTIN_MODELS:
                real = ("--model DIR (a converted CCEdit model)" if cfg.model.path == "tiny" else
                        "--model animatediff (the open trident; `ccedit models --model animatediff` lists its parts)")
                logger.warning("using a built-in tiny model: its weights are random, so the edit is noise-like; "
                               "pass %s for real edits", real)
            t0 = time.perf_counter()
            pipe = load_pipeline(cfg.model.path, controlnets=self.structure_controlnets(),
                                 tokenizer=cfg.model.tokenizer,
                                 scheduler=cfg.sampling.scheduler, dtype=cfg.model.dtype, device=cfg.model.device,
                                 base=cfg.model.base, loras=cfg.model.lora, fuse_lora=cfg.model.fuse_lora,
                                 parts=cfg.model.parts)
            if offloads(cfg.model.cpu_offload, self.device):
                pipe.enable_model_cpu_offload(device=self.device)
            if cfg.model.vae_slicing:
                pipe.enable_vae_slicing()
            if cfg.model.channels_last:
                pipe.enable_channels_last()
            if cfg.model.compile:
                pipe.compile_networks()
            self._pipe = pipe
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
        from .config import hierarchical_setting, window_length
        from .keyframe_match import ClipStructure, match_record, place_matched_keyframes
        from .pipelines.conditions import keyframes_act

        cfg, s = self.cfg, self.cfg.sampling
        started = time.perf_counter()
        keyframes = list(job.keyframes)
        check_keyframe_specs(keyframes)

        # 1. Frames at the working size, and the keyframes.
        prepared = prepare_clip(job.input, cfg)
        num_frames = prepared.frames.shape[0]
        images: list[np.ndarray | None] = [
            None if spec.is_auto else load_keyframe(spec.source, prepared.size, cfg.video.resize_mode)
            for spec in keyframes
        ]
        clip_structure = ClipStructure(prepared.frames) if keyframes else None  # to place and check the keyframes
        keyframes = place_matched_keyframes(keyframes, images, clip_structure)
        indices = resolve_keyframe_indices(keyframes, num_frames)

        # 2. Model and structure maps.
        self.structure_controlnets()  # a missing ControlNet is refused before any model loads
        pipe = self.pipe
        t0 = time.perf_counter()
        maps = self.structure(prepared.frames, prepared.fit)
        structure_seconds = time.perf_counter() - t0

        # 3. Keyframes left to ccedit are edited from the prompt, then everything is sampled.
        full_prompt, scales = sampled_prompt(cfg, job.prompt), structure_scales(cfg)
        generator = torch.Generator(device="cpu").manual_seed(s.seed)
        t0 = time.perf_counter()
        for i, spec in enumerate(keyframes):
            if not spec.is_auto:
                continue
            from .pipelines.keyframe_edit import edit_keyframe

            images[i] = edit_keyframe(
                pipe, full_prompt, prepared.frames[indices[i]], [m[indices[i]] for m in maps],
                negative_prompt=s.negative_prompt, strength=s.auto_keyframe_strength,
                num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, structure_scale=scales,
                generator=torch.Generator(device="cpu").manual_seed(s.seed + 1 + i),
            )
        auto_seconds = time.perf_counter() - t0
        # auto: CCEdit's anchor prior from keyframes that act, unless SDEdit starts from the source instead
        acting = keyframes_act(len(keyframes), s.appearance_scale)
        prior = s.prior if s.prior != "auto" else ("keyframe" if acting and s.strength == 1 else "none")
        result = pipe(
            full_prompt, prepared.frames, maps,
            negative_prompt=s.negative_prompt, keyframe=images or None, keyframe_index=indices or None,
            num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, structure_scale=scales,
            appearance_scale=s.appearance_scale, prior=prior,
            prior_coefficient=s.prior_coefficient if prior != "none" else 0.0,
            strength=s.strength, generator=generator, window_length=window_length(cfg),
            window_overlap=cfg.windows.overlap, hierarchical=hierarchical_setting(cfg), pin_keyframes=s.pin_keyframes,
            window_noise=cfg.windows.noise, record_conditions=cfg.output.conditions,
            callback_on_step_end=callback_on_step_end,
        )
        edited = result.frames[0]
        timings = {"structure": structure_seconds, "auto_keyframes": auto_seconds, **result.timings,
                   "wall": time.perf_counter() - started}
        record = {
            "input": str(job.input),
            "prompt": job.prompt,
            "full_prompt": full_prompt,
            "seed": s.seed,
            "keyframes": [
                {"path": spec.source, "auto": spec.is_auto, "index": index,
                 # whether the keyframe shows the source frame it was placed at (the score --match uses)
                 "match": match_record(clip_structure, images[i], index),
                 # how closely the output shows the keyframe at its frame: as high wherever it was placed
                 "output_psnr_db": psnr(edited[index], images[i])}
                for i, (spec, index) in enumerate(zip(keyframes, indices))
            ],
            "prior": prior,
            "video": {
                "num_frames": num_frames, "fps": prepared.clip.fps, "source_fps": prepared.clip.source_fps,
                "source_size": list(prepared.clip.source_size), "working_size": list(prepared.size),
                "frame_indices": list(map(int, prepared.clip.indices)), "fit": asdict(prepared.fit),
                # the working size, less pad mode's letterbox: what the outputs show
                "output_size": list(crop_frames(edited[:1], output_crop(prepared.fit)).shape[1:3]),
            },
            "windows": {"length": window_length(cfg), "overlap": cfg.windows.overlap, "per_pass": result.windows},
            "config": cfg.to_dict(),
            "device": str(self.device),
            "dtype": str(pipe.unet.dtype).replace("torch.", ""),
            "versions": package_versions(),
            "timings_seconds": timings,
            "peak_memory_bytes": result.peak_memory_bytes,
        }
        return EditResult(job, prepared, edited, maps, images, indices, record, started, result.conditions)


def write_edit_outputs(result: EditResult, output: Path, cfg: EditConfig, *, overwrite: bool = False) -> dict:
    """Publish an edit as one set: the mp4, automatic keyframes, optional GIF / frames / side-by-side, and the
    sidecar last, so its presence means the set is complete (outputs.py). Returns the sidecar."""
    from .io import side_by_side, write_frames, write_gif, write_video

    sidecar_path = edit_output_paths(output)["sidecar"]
    extras = selected_extras(output, cfg)
    auto_paths = {i: auto_keyframe_path(output, index) for i, (spec, index)
                  in enumerate(zip(result.job.keyframes, result.keyframe_indices)) if spec.is_auto}
    record = dict(result.record)
    keyframes = [dict(k, path=str(auto_paths[i])) if i in auto_paths else k for i, k in enumerate(record["keyframes"])]
    sidecar = {"output": str(output), **record, "keyframes": keyframes,
               "outputs": {**{k: str(v) for k, v in extras.items() if v},
                           **{f"keyframe{result.keyframe_indices[i]}": str(p) for i, p in auto_paths.items()}}}
    # Key order as before the split: the outputs follow the windows.
    order = ["output", "input", "prompt", "full_prompt", "seed", "keyframes", "prior", "video", "windows", "outputs"]
    sidecar = {**{k: sidecar[k] for k in order}, **{k: v for k, v in sidecar.items() if k not in order}}
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
                                               list(zip(result.keyframe_indices, result.keyframes)), result.frames)
            panels = [crop_frames(panel, crop) for panel in panels]
            write_video(stage.path(extras["side_by_side"]), side_by_side(*panels, labels=labels), fps)
        # The sidecar's timings are the result's: the wall time counts the writing too.
        result.timings["wall"] = time.perf_counter() - result.started
        sidecar["timings_seconds"] = result.timings
        write_json(stage.path(sidecar_path), sidecar)
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
    check_memory_before_decoding(input_path, cfg, keyframes=job.keyframes)
    # A model folder or hub id that cannot be found fails before any frame is decoded.
    if cfg.model.path == "animatediff":
        from .pipelines.loading import open_trident_folders

        open_trident_folders(cfg.model.parts)
    elif cfg.model.path not in NAMED_MODELS:
        from .pipelines.loading import resolve_model_folder

        resolve_model_folder(cfg.model.path)
    session = EditSession(cfg)
    result = session.edit(job)
    result.timings["model_load"] = session.load_seconds
    return write_edit_outputs(result, output, cfg, overwrite=overwrite)


def comparison_panels(
    source: np.ndarray,
    maps: list[tuple[str, torch.Tensor]],
    keyframes: list[tuple[int, np.ndarray]],
    edited: np.ndarray,
) -> tuple[list[np.ndarray], list[str]]:
    """The side-by-side's panels and labels: the source, every structure map (by annotator), every keyframe (held
    still for the whole clip, labelled with its frame) and the result, all uint8 `(T, H, W, 3)`."""
    panels, labels = [source], ["source"]
    for name, m in maps:
        panels.append(m.permute(0, 2, 3, 1).numpy())
        labels.append(name)
    for index, image in sorted(keyframes, key=lambda pair: pair[0]):
        panels.append(np.broadcast_to(image[None], source.shape))
        labels.append(f"keyframe {index}")
    panels.append(edited)
    labels.append("result")
    return panels, labels


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
