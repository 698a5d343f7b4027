"""Automatic keyframe editing: edit one source frame from the prompt, with the edit model's own base and ControlNet.

CCEdit left this step to the user (its "automatic" mode raised NotImplementedError). Image-to-image with structure
control is what diffusers' `StableDiffusionControlNetImg2ImgPipeline` does, so it runs on the components the
video pipeline already holds (frozen SD-1.5 UNet, VAE, text encoder and the structure ControlNets); only the
scheduler is its own, because that pipeline drives the diffusers scheduler API, which CCEdit's DPM++(2S) sampler
extends with extra evaluations per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline

from ..annotators.maps import as_unit
from ..schedulers import build_scheduler


def edit_keyframe(
    pipe,
    prompt: str,
    frame: np.ndarray,
    structure_maps: Sequence[torch.Tensor],
    *,
    negative_prompt: str | None = None,
    strength: float = 0.75,
    num_inference_steps: int = 30,
    guidance_scale: float = 7.5,
    structure_scale: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Edit one frame into a keyframe: SDEdit from the frame at `strength`, guided by `prompt` and its maps.

    Args:
        pipe (`CCEditPipeline`): supplies the base UNet, VAE, text encoder, tokenizer and ControlNets.
        prompt (`str`): the target description (as given to the video edit).
        frame (`np.ndarray`): the source frame, uint8 `(height, width, 3)` at the working size.
        structure_maps: per ControlNet, the frame's map `(3, height, width)`, uint8 or float in `[0, 1]`.
        strength (`float`): how far the edit may depart from the frame (1 ignores it).
        structure_scale: per ControlNet, or one for all.

    Returns:
        `np.ndarray`: the edited keyframe, uint8 `(height, width, 3)`.
    """
    nets = pipe.controlnets
    if len(structure_maps) != len(nets) or not nets:
        raise ValueError(f"automatic keyframes need one structure map per ControlNet ({len(nets)}), got {len(structure_maps)}")
    image_pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        controlnet=nets if len(nets) > 1 else nets[0], scheduler=build_scheduler("euler_ancestral"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    image_pipe.set_progress_bar_config(disable=True)
    height, width = frame.shape[:2]
    controls = [as_unit(m, dtype=torch.float32)[None] for m in structure_maps]
    scales = list(structure_scale) if isinstance(structure_scale, Sequence) else [float(structure_scale)] * len(nets)
    source = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    offload = pipe.offload_device
    if offload is not None:
        # The networks are shared: diffusers' own offload hooks serve this pipeline (whose UNet's forward is called),
        # then the video pipeline's hooks are put back.
        image_pipe.enable_model_cpu_offload(device=offload)
    try:
        result = image_pipe(
            prompt=prompt,
            image=source,
            control_image=controls if len(nets) > 1 else controls[0],
            height=height,
            width=width,
            strength=strength,
            # img2img runs int(steps * strength) steps: at least one, or nothing would be denoised
            num_inference_steps=max(num_inference_steps, math.ceil(1 / strength)),
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            controlnet_conditioning_scale=scales if len(nets) > 1 else scales[0],
            generator=generator,
            output_type="np",
        ).images[0]
    finally:
        if offload is not None:
            image_pipe.remove_all_hooks()
            pipe.enable_model_cpu_offload(device=offload)
    return (np.clip(result, 0, 1) * 255).round().astype(np.uint8)

