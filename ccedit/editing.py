"""The `ccedit edit` and `ccedit keyframe` workflows: clip in, edited video plus a JSON sidecar out."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import EditConfig
from .errors import UserError
from .io import atomic_path, fit_frames, fit_image, read_image, read_video, working_size, write_image
from .io.resize import FitRecord
from .io.video import VideoClip
from .outputs import check_edit_destination, edit_output_paths, publish_edit_outputs, selected_extras

logger = logging.getLogger(__name__)

# Working sizes are multiples of 64: the VAE's 8x times the UNet's three 2x downsamplings.
SIZE_MULTIPLE = 64


@dataclass
class PreparedClip:
    clip: VideoClip
    frames: np.ndarray  # uint8 (T, H, W, 3) at the working size
    fit: FitRecord

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]


def prepare_clip(path: str | Path, cfg: EditConfig) -> PreparedClip:
    """Select the frames the edit uses and bring them to the working size (aspect kept, then crop or pad)."""
    v = cfg.video
    # Without --frames the first window of the model's native length is edited (all frames of a shorter clip).
    clip = read_video(path, num_frames=v.num_frames, fps=v.fps, start=v.start, folder_fps=v.folder_fps,
                      max_frames=cfg.model.num_frames)
    if v.num_frames is None and clip.num_frames < cfg.model.num_frames:
        logger.info("%s has %d frames, fewer than the model's %d-frame window: editing all of them",
                    path, clip.num_frames, cfg.model.num_frames)
    size = working_size(clip.source_size, height=v.height, width=v.width, short_side=cfg.model.short_side,
                        multiple=SIZE_MULTIPLE)
    frames, fit = fit_frames(clip.frames, size, v.resize_mode)
    return PreparedClip(clip, frames, fit)


def resolve_keyframe_index(index: int | None, num_frames: int) -> int:
    """The keyframe's clip frame: the default when `index` is None; negative indices count from the end."""
    from .pipelines.conditions import check_keyframe_indices, default_keyframe_index

    return check_keyframe_indices([default_keyframe_index(num_frames) if index is None else index], num_frames)[0]


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


def check_output_free(paths: list[Path], overwrite: bool) -> None:
    for p in paths:
        if p.exists() and not overwrite:
            raise UserError(f"{p} already exists: pass --overwrite to replace it")


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


def build_annotators(cfg: EditConfig, device: torch.device):
    """One annotator per configured name; `depth` is the model's own depth estimator with CCEdit's normalisation."""
    from .annotators import build_annotator
    from .pipelines.loading import depth_estimator_path

    annotators = []
    for name in cfg.structure.annotators:
        options = dict(cfg.structure.options.get(name, {}) or {})
        if name == "depth":
            own = depth_estimator_path(cfg.model.path)
            if own is not None:
                options.setdefault("model", own)
            options.setdefault("preprocess", "ccedit")
            annotator = build_annotator("depth_dpt", **options)
        else:
            annotator = build_annotator(name, **options)
        annotators.append(annotator.to(device) if hasattr(annotator, "to") else annotator)
    return annotators


def compute_structure(
    frames: np.ndarray, annotators, cache_dir: str | None, cache_max_gb: float | None = None
) -> list[torch.Tensor]:
    from .annotators import StructureCache

    if cache_dir is None:
        return [a(frames) for a in annotators]
    cache = StructureCache(cache_dir, max_bytes=None if cache_max_gb is None else int(cache_max_gb * 1e9))
    return [cache.get_or_compute(frames, a) for a in annotators]


def run_edit(
    input_path: str | Path,
    prompt: str,
    output: Path,
    cfg: EditConfig,
    *,
    keyframe_path: str | Path | None = None,
    keyframe_index: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Edit `input_path` with `prompt` into `output` (mp4) and its sidecar `output.json`; return the sidecar."""
    from .io import side_by_side, write_frames, write_gif, write_video
    from .pipelines.loading import load_pipeline, resolve_device

    started = time.perf_counter()
    sidecar_path = edit_output_paths(output)["sidecar"]
    extras = selected_extras(output, cfg)
    check_edit_destination(input_path, output, cfg, overwrite=overwrite)
    if output.suffix.lower() not in (".mp4", ".mov"):
        raise UserError(f"output {output} must end in .mp4 (add output.gif=true for a GIF as well)")

    # 1. Frames at the working size, and the keyframe.
    prepared = prepare_clip(input_path, cfg)
    num_frames = prepared.frames.shape[0]
    keyframe = None
    if keyframe_path is not None:
        keyframe = load_keyframe(keyframe_path, prepared.size, cfg.video.resize_mode)
        keyframe_index = resolve_keyframe_index(keyframe_index, num_frames)
    elif keyframe_index is not None:
        raise UserError("--keyframe-index needs --keyframe IMAGE")

    # 2. Model and structure maps.
    if cfg.model.path == "tiny":
        logger.warning("using the built-in tiny model: its weights are random, so the edit is noise-like; "
                       "pass --model DIR (a converted CCEdit model) for real edits")
    s = cfg.sampling
    names = cfg.structure.annotators
    nets = list(cfg.structure.controlnets) + [None] * (len(names) - len(cfg.structure.controlnets))
    if nets.count(None) > 1:
        raise UserError(
            f"{len(names)} structure annotators need {len(names)} ControlNets but the model has one: add the others "
            "with structure.controlnets=[null,<path or hub id>]"
        )
    pipe = load_pipeline(cfg.model.path, controlnets=nets[: len(names)], tokenizer=cfg.model.tokenizer,
                         scheduler=s.scheduler, dtype=cfg.model.dtype, device=cfg.model.device)
    device = resolve_device(cfg.model.device)
    if cfg.model.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    if cfg.model.vae_slicing:
        pipe.enable_vae_slicing()
    t0 = time.perf_counter()
    maps = compute_structure(prepared.frames, build_annotators(cfg, device), cfg.structure.cache_dir,
                             cfg.structure.cache_max_gb)
    structure_seconds = time.perf_counter() - t0

    # 3. Sample.
    full_prompt = f"{s.add_prompt}, {prompt}" if s.add_prompt else prompt
    prior = s.prior if s.prior != "auto" else ("keyframe" if keyframe is not None and s.strength == 1 else "none")
    scales = [s.structure_scale] * len(names) if s.structure_scale is not None else (
        cfg.structure.scales * len(names) if len(cfg.structure.scales) == 1 else cfg.structure.scales
    )
    generator = torch.Generator(device="cpu").manual_seed(s.seed)
    result = pipe(
        full_prompt, prepared.frames, maps,
        negative_prompt=s.negative_prompt, keyframe=keyframe, keyframe_index=keyframe_index,
        num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, structure_scale=scales,
        appearance_scale=s.appearance_scale, prior=prior, prior_coefficient=s.prior_coefficient if prior != "none" else 0.0,
        strength=s.strength, generator=generator,
    )
    edited = result.frames[0]

    # 4. Write the outputs into a staging folder, each verified, then publish them as one set, the sidecar last,
    # so its presence means the run finished (outputs.py).
    fps = prepared.clip.fps
    timings = {"structure": structure_seconds, **result.timings, "wall": time.perf_counter() - started}
    sidecar = {
        "output": str(output),
        "input": str(input_path),
        "prompt": prompt,
        "full_prompt": full_prompt,
        "seed": s.seed,
        "keyframe": None if keyframe is None else {"path": str(keyframe_path), "index": keyframe_index},
        "prior": prior,
        "video": {
            "num_frames": num_frames, "fps": fps, "source_fps": prepared.clip.source_fps,
            "source_size": list(prepared.clip.source_size), "working_size": list(prepared.size),
            "frame_indices": list(map(int, prepared.clip.indices)), "fit": asdict(prepared.fit),
        },
        "outputs": {k: str(v) for k, v in extras.items() if v},
        "config": cfg.to_dict(),
        "device": str(device),
        "dtype": str(pipe.unet.dtype).replace("torch.", ""),
        "versions": package_versions(),
        "timings_seconds": timings,
        "peak_memory_bytes": result.peak_memory_bytes,
    }
    with publish_edit_outputs(output, cfg, overwrite=overwrite) as stage:
        write_video(stage.path(output), edited, fps)
        if extras["gif"]:
            write_gif(stage.path(extras["gif"]), edited, fps)
        if extras["frames"]:
            write_frames(stage.path(extras["frames"]), edited)
        if extras["side_by_side"]:
            structure_view = (maps[0].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            write_video(stage.path(extras["side_by_side"]), side_by_side(prepared.frames, structure_view, edited), fps)
        timings["wall"] = time.perf_counter() - started  # the same dict as the sidecar's: counts the writing too
        write_json(stage.path(sidecar_path), sidecar)
    return sidecar


def extract_keyframe(input_path: str | Path, output: Path, cfg: EditConfig, index: int | None, overwrite: bool) -> int:
    """Write exactly the frame an edit with the same settings would use as keyframe `index`; return the index."""
    check_output_free([output], overwrite)
    prepared = prepare_clip(input_path, cfg)
    resolved = resolve_keyframe_index(index, prepared.frames.shape[0])
    write_image(output, prepared.frames[resolved])
    return resolved
