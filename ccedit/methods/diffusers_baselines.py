"""diffusers' own video-editing pipelines as baselines: each is called as diffusers documents it, nothing changed.

`animatediff` runs `AnimateDiffVideoToVideoControlNetPipeline` (SD-1.5 + AnimateDiff motion modules + a per-frame
ControlNet): the same image family as ccedit's networks, so comparing against it isolates what CCEdit's trained
temporal layers and appearance branch add. `wan_vace` runs `WanVACEPipeline` (Wan2.1-VACE: text, a control video
and optional reference images). Both read the clip with the edit's own reader, compute the control frames with a
ccedit annotator, load their parts from local folders or hub ids on the first edit, and build tiny random parts
offline with `tiny: true`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..config import EditJob, VideoConfig
from ..errors import UserError
from .base import Method, MethodOutput


def check_positive(name: str, value: float, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        raise UserError(f"option {name}={value!r} must be {kind} {'>= 0' if allow_zero else '> 0'}")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """diffusers' `[0, 1]` float frames as uint8, rounded as its `numpy_to_pil` rounds them."""
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


class DiffusersVideoMethod(Method):
    """What the diffusers baselines share: options checked when built, the clip and its control frames read the
    edit's way, the pipeline loaded once on the first edit, time and peak memory measured around the call."""

    def __init__(self, video: VideoConfig, *, annotator: str, annotator_options: Mapping[str, Any] | None,
                 num_inference_steps: int, guidance_scale: float, seed: int, dtype: str, device: str):
        from ..annotators import ANNOTATORS

        super().__init__(video)
        if annotator not in ANNOTATORS:
            raise UserError(f"unknown annotator {annotator!r}: choose one of {', '.join(sorted(ANNOTATORS))}")
        check_positive("num_inference_steps", num_inference_steps, integer=True)
        check_positive("guidance_scale", guidance_scale, allow_zero=True)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"option seed={seed!r} must be an integer")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise UserError(f"option dtype={dtype!r}: choose auto, float32, float16 or bfloat16")
        self.annotator_name = annotator
        self.annotator_options = dict(annotator_options or {})
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self._pipe = None
        self._annotator = None

    # Subclasses: the parts and sampling settings that decide a result, the loaded pipeline, one call of it.
    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, device: torch.device, dtype: torch.dtype):
        raise NotImplementedError

    def call(self, pipe, frames: np.ndarray, control: np.ndarray, job: EditJob,
             generator: torch.Generator) -> np.ndarray:
        """The edited clip as diffusers returns it with `output_type="np"`: float `(frames, height, width, 3)`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        # dtype and device change the numbers (half precision, GPU kernels), so they are part of the key.
        return {"type": self.type, **self.settings(), "annotator": self.annotator_name,
                "annotator_options": self.annotator_options, "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale, "seed": self.seed, "dtype": self.dtype, "device": self.device,
                "video": asdict(self.video)}

    def edit_settings(self):
        """The edit schema holding this method's frame selection, so the clip is read exactly as an edit reads it."""
        from ..config import EditConfig

        cfg = EditConfig()
        cfg.video = VideoConfig(**asdict(self.video))
        return cfg

    def pipeline(self):
        if self._pipe is None:
            from ..pipelines.loading import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            self._pipe = self.load(device, resolve_dtype(self.dtype, device))
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def annotator(self):
        from ..annotators import build_annotator

        if self._annotator is None:
            self._annotator = build_annotator(self.annotator_name, **self.annotator_options)
        return self._annotator

    def prepare(self) -> None:
        self.annotator()
        self.pipeline()

    def control_frames(self, frames: np.ndarray) -> np.ndarray:
        """The annotator's structure maps of `frames`, uint8 `(frames, height, width, 3)`."""
        from ..annotators.maps import held_maps

        return held_maps(self.annotator(), frames).permute(0, 2, 3, 1).numpy()

    def generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device).manual_seed(self.seed)

    def run(self, job: EditJob, fields: Mapping[str, Any]) -> MethodOutput:
        from ..editing import prepare_clip
        from ..pipelines.pipeline_calls import peak_memory_bytes

        started = time.perf_counter()
        prepared = prepare_clip(job.input, self.edit_settings())
        control = self.control_frames(prepared.frames)
        pipe = self.pipeline()
        device = pipe.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        edited = self.call(pipe, prepared.frames, control, job, self.generator(device))
        peak = peak_memory_bytes(device)
        return MethodOutput(frames=to_uint8(edited), fps=prepared.clip.fps, structure=control,
                            seconds=time.perf_counter() - started, peak_memory_bytes=peak)


def pil_frames(frames: np.ndarray) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(f) for f in frames]


class AnimateDiffMethod(DiffusersVideoMethod):
    """diffusers' `AnimateDiffVideoToVideoControlNetPipeline`: the source clip noised to `strength` and denoised
    by SD-1.5 with AnimateDiff motion modules, each frame steered by a ControlNet on its structure map.

    Args:
        base: an SD-1.5 model in diffusers format (folder or hub id: unet/, vae/, text_encoder/, tokenizer/).
        motion_adapter: AnimateDiff motion modules (a diffusers `MotionAdapter` folder or hub id).
        controlnet: an SD-1.5 ControlNet matching `annotator` (folder or hub id).
        annotator: the ccedit annotator making the control frames (`depth_dpt`, `canny`, ...), with
            `annotator_options` as its constructor options.
        tiny: build tiny random parts in memory instead (offline; for tests and install checks).
        scheduler: a name of `ccedit.schedulers.SCHEDULERS` with SD-1.5's settings (`ddim`, as AnimateDiff's
            examples use).
        num_inference_steps, guidance_scale, strength, controlnet_conditioning_scale, negative_prompt: as the
            pipeline's arguments of the same names.
        seed: the seed of the `torch.Generator` given to the pipeline.
        dtype, device: `auto` picks float16 on CUDA and float32 on CPU.
    """

    type = "animatediff"

    def __init__(self, video: VideoConfig, base: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 motion_adapter: str = "guoyww/animatediff-motion-adapter-v1-5-3",
                 controlnet: str = "lllyasviel/control_v11f1p_sd15_depth", annotator: str = "depth_dpt",
                 annotator_options: Mapping[str, Any] | None = None, tiny: bool = False, scheduler: str = "ddim",
                 num_inference_steps: int = 25, guidance_scale: float = 7.5, strength: float = 0.8,
                 controlnet_conditioning_scale: float = 1.0, negative_prompt: str = "", seed: int = 0,
                 dtype: str = "auto", device: str = "auto"):
        from ..pipelines.denoise import sdedit_kept_steps
        from ..schedulers import SCHEDULERS

        super().__init__(video, annotator=annotator, annotator_options=annotator_options,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                         dtype=dtype, device=device)
        if scheduler not in SCHEDULERS:
            raise UserError(f"unknown scheduler {scheduler!r}: choose one of {', '.join(sorted(SCHEDULERS))}")
        if not (isinstance(strength, (int, float)) and 0 < strength <= 1):
            raise UserError(f"option strength={strength!r} must be in (0, 1]")
        if sdedit_kept_steps(num_inference_steps, strength, "diffusers") < 1:
            # diffusers runs the last int(steps x strength) steps; none would leave it nothing to denoise
            raise UserError(f"num_inference_steps={num_inference_steps} x strength={strength} runs no step: "
                            "raise either so that their product is at least 1")
        check_positive("controlnet_conditioning_scale", controlnet_conditioning_scale, allow_zero=True)
        self.tiny = bool(tiny)
        # Tiny parts are built in code: the model references would only mislead the key.
        self.parts = {} if self.tiny else {"base": base, "motion_adapter": motion_adapter, "controlnet": controlnet}
        self.scheduler = scheduler
        self.strength = float(strength)
        self.controlnet_conditioning_scale = float(controlnet_conditioning_scale)
        self.negative_prompt = negative_prompt

    def settings(self) -> dict[str, Any]:
        return {"tiny": self.tiny, **self.parts, "scheduler": self.scheduler, "strength": self.strength,
                "controlnet_conditioning_scale": self.controlnet_conditioning_scale,
                "negative_prompt": self.negative_prompt}

    def load(self, device: torch.device, dtype: torch.dtype):
        from diffusers import AnimateDiffVideoToVideoControlNetPipeline

        from ..schedulers import build_scheduler

        components = tiny_animatediff_parts() if self.tiny else load_animatediff_parts(self.parts, dtype)
        pipe = AnimateDiffVideoToVideoControlNetPipeline(**components, scheduler=build_scheduler(self.scheduler))
        pipe = pipe.to(device)
        # Loaded parts already have `dtype`; casting float32 to float32 would only make diffusers warn.
        return pipe.to(dtype=dtype) if self.tiny and dtype != torch.float32 else pipe

    def call(self, pipe, frames, control, job, generator):
        height, width = frames.shape[1:3]
        out = pipe(
            video=pil_frames(frames), prompt=job.prompt, negative_prompt=self.negative_prompt or None,
            conditioning_frames=pil_frames(control), height=height, width=width,
            num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
            strength=self.strength, controlnet_conditioning_scale=self.controlnet_conditioning_scale,
            generator=generator, output_type="np",
        )
        return out.frames[0]


def tiny_animatediff_parts() -> dict:
    """The tiny open trident's parts (seeded, random) under the names diffusers' pipeline takes."""
    from ..pipelines.tiny import tiny_animatediff_components

    parts = tiny_animatediff_components(appearance=False)
    return {"vae": parts["vae"], "text_encoder": parts["text_encoder"], "tokenizer": parts["tokenizer"],
            "unet": parts["unet"], "motion_adapter": parts["temporal"], "controlnet": parts["controlnet"]}


def load_animatediff_parts(parts: Mapping[str, str], dtype: torch.dtype) -> dict:
    """SD-1.5's parts, the motion adapter and the ControlNet from folders or hub ids (resolved first, so an
    offline machine fails at once with one line)."""
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..hub import load_tokenizer
    from ..pipelines.model_folders import load_component, resolve_model_folder

    hint = "method option {}=DIR"
    base = str(resolve_model_folder(parts["base"], "base model", hint.format("base")))
    adapter = str(resolve_model_folder(parts["motion_adapter"], "motion adapter", hint.format("motion_adapter")))
    net = str(resolve_model_folder(parts["controlnet"], "ControlNet", hint.format("controlnet")))
    return {
        "vae": load_component(AutoencoderKL, base, "vae", "VAE", torch_dtype=dtype),
        "text_encoder": load_component(CLIPTextModel, base, "text_encoder", "text encoder", dtype=dtype,
                              trust_remote_code=False),
        "tokenizer": load_tokenizer(base),
        "unet": load_component(UNet2DConditionModel, base, "unet", "base UNet", torch_dtype=dtype),
        "motion_adapter": load_component(MotionAdapter, adapter, None, "motion adapter", torch_dtype=dtype),
        "controlnet": load_component(ControlNetModel, net, None, "ControlNet", torch_dtype=dtype),
    }
