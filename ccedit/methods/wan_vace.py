"""Wan2.1-VACE (diffusers' `WanVACEPipeline`) as a baseline: text plus a control video, optional reference images.

VACE generates the clip anew from the control video (the structure maps; no mask, so every pixel is generated),
the prompt, and reference images when the job has keyframe images. Wan's VAE compresses time by 4, so the pipeline
takes 4k+1 frames: the control video is extended by repeating its last map and the result cut back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..config import VideoConfig
from ..errors import UserError
from ..pipelines.tiny_wan import tiny_wan_vace_parts
from .diffusers_baselines import DiffusersVideoMethod, check_positive, pil_frames

# Wan's VAE: 8x spatial and 4x temporal compression; the transformer's patches are 2x2 latent pixels.
SIZE_MULTIPLE = 16
TIME_FACTOR = 4


def wan_frame_count(frames: int) -> int:
    """The smallest count of the form 4k+1 that holds `frames`."""
    return frames + (-(frames - 1)) % TIME_FACTOR


class WanVACEMethod(DiffusersVideoMethod):
    """diffusers' `WanVACEPipeline`.

    Args:
        video: the frames to edit and their size (the evaluation's `video` section); sides must be multiples of 16.
        model: a Wan2.1-VACE model in diffusers format (folder or hub id), e.g. `Wan-AI/Wan2.1-VACE-1.3B-diffusers`;
            its own scheduler is used. The VAE loads in float32, as diffusers' examples load it.
        annotator: the ccedit annotator whose maps are the control video (`depth_dpt`, `canny`, ...), with
            `annotator_options` as its constructor options.
        tiny: build tiny random parts in memory instead (offline; for tests and install checks).
        num_inference_steps, guidance_scale, conditioning_scale, negative_prompt: as the pipeline's arguments.
        seed: the seed of the `torch.Generator` given to the pipeline.
        dtype: of the transformer and text encoder; `auto` picks bfloat16 on CUDA (Wan's training precision) and
            float32 on CPU. device: `auto` picks CUDA when present.
    Reference images: the job's keyframe images (not `auto`), in their order.
    """

    type = "wan_vace"

    def __init__(self, video: VideoConfig, model: str = "Wan-AI/Wan2.1-VACE-1.3B-diffusers",
                 annotator: str = "depth_dpt", annotator_options: Mapping[str, Any] | None = None, tiny: bool = False,
                 num_inference_steps: int = 30, guidance_scale: float = 5.0, conditioning_scale: float = 1.0,
                 negative_prompt: str = "", seed: int = 0, dtype: str = "auto", device: str = "auto"):
        super().__init__(video, annotator=annotator, annotator_options=annotator_options,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                         dtype=dtype, device=device)
        check_positive("conditioning_scale", conditioning_scale, allow_zero=True)
        for side in ("height", "width"):
            value = getattr(video, side)
            if value is not None and value % SIZE_MULTIPLE:
                raise UserError(f"{self.type} edits sides that are multiples of {SIZE_MULTIPLE}: set video.{side} "
                                f"to one (got {value})")
        self.tiny = bool(tiny)
        self.model = None if self.tiny else model
        self.conditioning_scale = float(conditioning_scale)
        self.negative_prompt = negative_prompt

    def settings(self) -> dict[str, Any]:
        return {"tiny": self.tiny, **({} if self.tiny else {"model": self.model}),
                "conditioning_scale": self.conditioning_scale, "negative_prompt": self.negative_prompt}

    def pipeline(self):
        if self._pipe is None:
            from ..pipelines.loading import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            dtype = torch.bfloat16 if self.dtype == "auto" and device.type == "cuda" else resolve_dtype(
                self.dtype, device)
            self._pipe = self.load(device, dtype)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def load(self, device: torch.device, dtype: torch.dtype):
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        from ..pipelines.model_folders import load_component, resolve_model_folder

        if self.tiny:
            pipe = WanVACEPipeline(**tiny_wan_vace_parts())
            return pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
        folder = str(resolve_model_folder(self.model, "Wan VACE model", "method option model=DIR"))
        vae = load_component(AutoencoderKLWan, folder, "vae", "Wan VAE", torch_dtype=torch.float32)
        return load_component(WanVACEPipeline, folder, None, "Wan VACE pipeline", vae=vae, torch_dtype=dtype).to(device)

    def reference_images(self, job, size: tuple[int, int]) -> list | None:
        from ..editing import load_keyframe

        images = [load_keyframe(k.source, size, "crop") for k in job.keyframes if not k.is_auto]
        return pil_frames(np.stack(images)) if images else None

    def call(self, pipe, frames, control, job, generator):
        count, (height, width) = len(frames), frames.shape[1:3]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise UserError(f"{self.type} edits sides that are multiples of {SIZE_MULTIPLE}: set video.height and "
                            f"video.width (the clip is {width}x{height})")
        padded = wan_frame_count(count)
        control = np.concatenate([control, np.repeat(control[-1:], padded - count, axis=0)])
        out = pipe(
            prompt=job.prompt, negative_prompt=self.negative_prompt or None, video=pil_frames(control),
            reference_images=self.reference_images(job, (height, width)),
            conditioning_scale=self.conditioning_scale, height=height, width=width, num_frames=padded,
            num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, generator=generator,
            output_type="np",
        )
        return out.frames[0][:count]
