"""The `ccedit edit` and `ccedit keyframe` workflows: clip in, edited video plus a JSON sidecar out."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .config import EditConfig
from .errors import UserError
from .io import atomic_path, fit_frames, fit_image, read_image, read_video, video_info, working_size, write_image
from .io.resize import FitRecord
from .io.video import VideoClip
from .outputs import check_edit_destination, edit_output_paths, publish_edit_outputs, selected_extras

logger = logging.getLogger(__name__)

@dataclass
class PreparedClip:
    clip: VideoClip
    frames: np.ndarray  # uint8 (T, H, W, 3) at the working size
    fit: FitRecord

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]


def clip_working_size(source_size: tuple[int, int], cfg: EditConfig) -> tuple[int, int]:
    """The `(height, width)` an edit of a clip of `source_size` works at, under the settings.

    A side derived from an extreme aspect ratio (a 4x4000 clip) is held to the same bound as --height/--width.
    """
    from .config_checks import MAX_SIDE

    v = cfg.video
    size = working_size(source_size, height=v.height, width=v.width, short_side=cfg.model.short_side,
                        multiple=cfg.model.size_multiple)
    if max(size) > MAX_SIDE:
        raise UserError(
            f"a {source_size[1]}x{source_size[0]} clip would be edited at {size[1]}x{size[0]}, over the "
            f"{MAX_SIDE}-pixel limit of a side: set both --height and --width (crop or pad it to another aspect)"
        )
    return size


def selected_frame_count(total: int, source_fps: float, cfg: EditConfig) -> int:
    """How many frames `read_video` will select from a clip of `total` frames at `source_fps` (0: none)."""
    v = cfg.video
    gap = 1 if v.fps is None else max(1, int(np.round(source_fps / v.fps)))
    first = int(np.round(v.start * source_fps))
    available = max(0, -(-(total - first) // gap))
    return available if v.num_frames is None else min(available, v.num_frames)


def check_memory_before_decoding(input_path: str | Path, cfg: EditConfig, *, with_model: bool = True) -> None:
    """Refuse with one line, before any frame is decoded, an edit whose memory estimate exceeds what the machine
    has (`resources.py`); `model.check_memory=false` (--force) skips it. A clip that cannot be read is left to the
    reader, which says why in its own words."""
    from .config import window_length
    from .resources import available_device_memory, available_host_memory, check_memory, estimate_edit_memory
    from .resources import weights_size

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
    if with_model:
        from .pipelines.loading import resolve_device

        device = resolve_device(cfg.model.device)
    else:
        device = torch.device("cpu")
    on_accelerator = device.type != "cpu" and not cfg.model.cpu_offload
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("float16" if device.type == "cuda" else "float32")
    estimate = estimate_edit_memory(
        num_frames=num_frames, size=size, source_size=source_size,
        num_maps=len(cfg.structure.annotators) if with_model else 0,
        window_length=window_length(cfg), guidance=cfg.sampling.guidance_scale > 1,
        weights_bytes=weights_size(cfg.model.path), dtype_bytes=4 if dtype in ("float32", "fp32") else 2,
        on_accelerator=on_accelerator,
    )
    if not with_model:  # `ccedit keyframe` only decodes and fits the frames
        estimate.host = {k: v for k, v in estimate.host.items() if k in ("frames", "decoding")}
        estimate.device = {}
    check_memory(estimate, available_host_memory(), available_device_memory(device) if on_accelerator else None)


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
                          frame_transform=fit)
    return PreparedClip(clip, clip.frames, records[0])


@dataclass(frozen=True)
class KeyframeSpec:
    """One `--keyframe` argument: an image path or `auto`, and the frame it shows (None: the default frame)."""

    source: str
    index: int | None = None

    @property
    def is_auto(self) -> bool:
        return self.source == AUTO_KEYFRAME

    @classmethod
    def parse(cls, text: str, index: int | None = None) -> "KeyframeSpec":
        """`IMAGE`, `IMAGE@INDEX`, `auto` or `auto@INDEX`; `index` (from --keyframe-index) when none is written."""
        path, sep, suffix = text.rpartition("@")
        if sep and suffix.lstrip("-").isdigit():
            if index is not None:
                raise UserError(f"--keyframe {text} already names its frame: drop --keyframe-index")
            return cls(path, int(suffix))
        return cls(text, index)


AUTO_KEYFRAME = "auto"


def check_keyframe_specs(specs: list[KeyframeSpec]) -> None:
    """Checks that need no frames: the images exist, and at most one keyframe leaves its frame to the default."""
    for spec in specs:
        if not spec.is_auto and not Path(spec.source).is_file():
            raise UserError(f"keyframe image {spec.source} does not exist: check the path (or use --keyframe auto)")
    if sum(spec.index is None for spec in specs) > 1:
        raise UserError("several keyframes need their frames: write each as IMAGE@INDEX, e.g. --keyframe a.png@0")


def resolve_keyframe_indices(specs: list[KeyframeSpec], num_frames: int) -> list[int]:
    """Each keyframe's clip frame (the default for one without an index, said aloud), checked once."""
    from .pipelines.conditions import check_keyframe_indices, default_keyframe_index

    indices = []
    for spec in specs:
        if spec.index is None:
            index = default_keyframe_index(num_frames)
            logger.warning("keyframe %s shows frame %d of %d (the centre frame); write %s@INDEX for another frame",
                           spec.source, index, num_frames, spec.source)
        else:
            index = spec.index
        indices.append(index)
    return list(check_keyframe_indices(indices, num_frames))


def resolve_keyframe_index(index: int | None, num_frames: int) -> int:
    """The keyframe's clip frame: the default when `index` is None; negative indices count from the end."""
    from .pipelines.conditions import check_keyframe_indices, default_keyframe_index

    return check_keyframe_indices([default_keyframe_index(num_frames) if index is None else index], num_frames)[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def maps_to_uint8(maps: torch.Tensor) -> torch.Tensor:
    """Structure maps in `[0, 1]` held as uint8: a quarter of float32's memory for a long clip."""
    return (maps.clamp(0, 1) * 255).round().to(torch.uint8)


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
    from .annotators.loading import LOCAL_FOLDER_ADVICE
    from .errors import ModelNotFoundError
    from .pipelines.loading import depth_estimator_path

    annotators = []
    for name in cfg.structure.annotators:
        options = dict(cfg.structure.options.get(name, {}) or {})
        try:
            if name == "depth":
                own = depth_estimator_path(cfg.model.path)
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
    """uint8 structure maps `(T, 3, H, W)` of `frames`, one tensor per annotator, through the cache if it has a folder.

    `content` (`(top, left, height, width)`, the `pad_box` of pad mode) limits the annotators to the picture: the
    letterbox would otherwise become hard edges (or a depth step) in the maps, which the ControlNet would keep. The
    maps are padded back to the frame size with 0, the neutral value of every annotator (no edge; far away).
    """
    from .annotators import StructureCache

    height, width = frames.shape[1:3]
    if content is not None:
        top, left, h, w = content
        frames = np.ascontiguousarray(frames[:, top : top + h, left : left + w])
    if cache_dir is None:
        maps = (a(frames) for a in annotators)
    else:
        cache = StructureCache(cache_dir, max_bytes=None if cache_max_gb is None else int(cache_max_gb * 1e9))
        maps = (cache.get_or_compute(frames, a) for a in annotators)
    maps = [maps_to_uint8(m) for m in maps]
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

    `keyframes` are edited images (or `auto`: edited here from the prompt) with the frame each shows.
    """
    from .config import hierarchical_setting, window_length
    from .io import side_by_side, write_frames, write_gif, write_video
    from .pipelines.loading import load_pipeline, resolve_device

    started = time.perf_counter()
    keyframes = list(keyframes)
    sidecar_path = edit_output_paths(output)["sidecar"]
    extras = selected_extras(output, cfg)
    if output.suffix.lower() not in (".mp4", ".mov"):
        raise UserError(f"output {output} must end in .mp4 (add output.gif=true for a GIF as well)")
    check_keyframe_specs(keyframes)
    check_edit_destination(input_path, output, cfg, overwrite=overwrite)
    check_memory_before_decoding(input_path, cfg)
    if cfg.model.path != "tiny":
        from .pipelines.loading import resolve_model_folder

        resolve_model_folder(cfg.model.path)  # a hub id that cannot be fetched fails before any frame is decoded

    # 1. Frames at the working size, and the keyframes.
    prepared = prepare_clip(input_path, cfg)
    num_frames = prepared.frames.shape[0]
    indices = resolve_keyframe_indices(keyframes, num_frames)
    images: list[np.ndarray | None] = [
        None if spec.is_auto else load_keyframe(spec.source, prepared.size, cfg.video.resize_mode) for spec in keyframes
    ]
    auto_paths = {i: auto_keyframe_path(output, index) for i, index in enumerate(indices) if keyframes[i].is_auto}

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
                             cfg.structure.cache_max_gb, content=padded_content(prepared.fit))
    structure_seconds = time.perf_counter() - t0

    # 3. Keyframes left to ccedit are edited from the prompt, then everything is sampled.
    full_prompt = f"{s.add_prompt}, {prompt}" if s.add_prompt else prompt
    scales = [s.structure_scale] * len(names) if s.structure_scale is not None else (
        cfg.structure.scales * len(names) if len(cfg.structure.scales) == 1 else cfg.structure.scales
    )
    generator = torch.Generator(device="cpu").manual_seed(s.seed)
    t0 = time.perf_counter()
    for i in auto_paths:
        from .pipelines.keyframe_edit import edit_keyframe

        images[i] = edit_keyframe(
            pipe, full_prompt, prepared.frames[indices[i]], [m[indices[i]] for m in maps],
            negative_prompt=s.negative_prompt, strength=s.auto_keyframe_strength,
            num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, structure_scale=scales,
            generator=torch.Generator(device="cpu").manual_seed(s.seed + 1 + i),
        )
    auto_seconds = time.perf_counter() - t0
    prior = s.prior if s.prior != "auto" else ("keyframe" if keyframes and s.strength == 1 else "none")
    result = pipe(
        full_prompt, prepared.frames, maps,
        negative_prompt=s.negative_prompt, keyframe=images or None, keyframe_index=indices or None,
        num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, structure_scale=scales,
        appearance_scale=s.appearance_scale, prior=prior, prior_coefficient=s.prior_coefficient if prior != "none" else 0.0,
        strength=s.strength, generator=generator, window_length=window_length(cfg), window_overlap=cfg.windows.overlap,
        hierarchical=hierarchical_setting(cfg), pin_keyframes=s.pin_keyframes, window_noise=cfg.windows.noise,
    )
    edited = result.frames[0]
    crop = output_crop(prepared.fit)
    written = crop_frames(edited, crop)  # what the outputs show: the source's framing

    # 4. Write the outputs into a staging folder, each verified, then publish them as one set, the sidecar last,
    # so its presence means the run finished (outputs.py).
    fps = prepared.clip.fps
    timings = {"structure": structure_seconds, "auto_keyframes": auto_seconds, **result.timings,
               "wall": time.perf_counter() - started}
    sidecar = {
        "output": str(output),
        "input": str(input_path),
        "prompt": prompt,
        "full_prompt": full_prompt,
        "seed": s.seed,
        "keyframes": [
            {"path": str(auto_paths.get(i, spec.source)), "auto": spec.is_auto, "index": index,
             # how closely the output shows the keyframe at its frame
             "psnr_db": psnr(edited[index], images[i])}
            for i, (spec, index) in enumerate(zip(keyframes, indices))
        ],
        "prior": prior,
        "video": {
            "num_frames": num_frames, "fps": fps, "source_fps": prepared.clip.source_fps,
            "source_size": list(prepared.clip.source_size), "working_size": list(prepared.size),
            "frame_indices": list(map(int, prepared.clip.indices)), "fit": asdict(prepared.fit),
            "output_size": list(written.shape[1:3]),  # the working size, less pad mode's letterbox
        },
        "windows": {"length": window_length(cfg), "overlap": cfg.windows.overlap, "per_pass": result.windows},
        "outputs": {**{k: str(v) for k, v in extras.items() if v},
                    **{f"keyframe{indices[i]}": str(p) for i, p in auto_paths.items()}},
        "config": cfg.to_dict(),
        "device": str(device),
        "dtype": str(pipe.unet.dtype).replace("torch.", ""),
        "versions": package_versions(),
        "timings_seconds": timings,
        "peak_memory_bytes": result.peak_memory_bytes,
    }
    with publish_edit_outputs(output, cfg, overwrite=overwrite, extra_paths=list(auto_paths.values())) as stage:
        write_video(stage.path(output), written, fps)
        for i, path in auto_paths.items():
            write_image(stage.path(path), images[i])
        if extras["gif"]:
            write_gif(stage.path(extras["gif"]), written, fps)
        if extras["frames"]:
            write_frames(stage.path(extras["frames"]), written)
        if extras["side_by_side"]:
            panels, labels = comparison_panels(prepared.frames, list(zip(names, maps)), list(zip(indices, images)),
                                               edited)
            panels = [crop_frames(panel, crop) for panel in panels]
            write_video(stage.path(extras["side_by_side"]), side_by_side(*panels, labels=labels), fps)
        timings["wall"] = time.perf_counter() - started  # the same dict as the sidecar's: counts the writing too
        write_json(stage.path(sidecar_path), sidecar)
    return sidecar


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


def auto_keyframe_path(output: Path, index: int) -> Path:
    """Where `--keyframe auto` saves the keyframe it made for frame `index`, beside the output."""
    return output.with_name(f"{output.stem}.keyframe{index}.png")


def extract_keyframe(input_path: str | Path, output: Path, cfg: EditConfig, index: int | None, overwrite: bool) -> int:
    """Write exactly the frame an edit with the same settings would use as keyframe `index`; return the index."""
    check_output_free([output], overwrite)
    check_memory_before_decoding(input_path, cfg, with_model=False)
    prepared = prepare_clip(input_path, cfg)
    resolved = resolve_keyframe_index(index, prepared.frames.shape[0])
    write_image(output, prepared.frames[resolved])
    return resolved
