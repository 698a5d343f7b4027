"""What every ccedit pipeline's call shares, whatever its networks: the source video's check and its uint8 form,
diffusers' frame conversion, the stage clock, the call's peak memory and diffusers' step-end callback as the
sampler's callback."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.video_processor import VideoProcessor

from ..errors import InvalidInputError


def finished_time(device: torch.device) -> float:
    """`time.perf_counter()` once `device` has run the work queued so far: on a GPU a stage's time then counts its
    kernels, not only their launches (one synchronisation per stage boundary)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def check_video(video) -> np.ndarray | torch.Tensor:
    """A uint8 `(T, H, W, 3)` array or a float `(T, 3, H, W)` tensor in [0, 1], checked; converted per chunk later."""
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise InvalidInputError(f"`video` as an array must be uint8 (frames, height, width, 3), got {video.dtype} {video.shape}")
    elif isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[1] != 3:
            raise InvalidInputError(f"`video` as a tensor must be (frames, 3, height, width), got {tuple(video.shape)}")
        check_unit_range("video", video)
    else:
        raise InvalidInputError(f"`video` must be a uint8 array or a float tensor, got {type(video).__name__}")
    return video


def check_unit_range(name: str, frames: torch.Tensor) -> None:
    """Float frames must lie in [0, 1]: diffusers' processor leaves frames with negative values unnormalised."""
    low, high = frames.aminmax()
    if not (0 <= float(low) and float(high) <= 1):
        raise InvalidInputError(f"`{name}` as a tensor must hold values in [0, 1], got [{float(low):.3g}, "
                                f"{float(high):.3g}]: scale it, or pass uint8 frames")


def video_size(video) -> tuple[int, int, int]:
    """(frames, height, width) of a video checked by `check_video`."""
    return (video.shape[0], *video.shape[1:3]) if isinstance(video, np.ndarray) else (video.shape[0], *video.shape[2:])


# diffusers' frame conversion: frames in [0, 1] -> [-1, 1] for the VAE, and its output back. Frames arrive at the
# working size, so nothing is resized. The pipeline converts chunks of frames with `preprocess` rather than a whole
# clip with `preprocess_video`, so that no float copy of a long clip is ever made.
FRAME_PROCESSOR = VideoProcessor(do_resize=False, do_normalize=True)


def unit_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames `(n, 3, H, W)` in [0, 1] as uint8 `(n, H, W, 3)` on the CPU. diffusers rounds to uint8 only on its way
    to PIL (`numpy_to_pil`; its "np" output stays float): the same rounding (x 255, half to even) here, on the
    frames' device, so that only uint8 frames cross to the CPU."""
    return (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu()


def video_as_uint8(video) -> np.ndarray:
    """A video checked by `check_video` as uint8 `(T, H, W, 3)` (a float tensor rounded from `[0, 1]`)."""
    if isinstance(video, np.ndarray):
        return video
    return unit_to_uint8(video.float().clamp(0, 1)).numpy()


def step_end_callback(pipe, callback, tensor_inputs: Sequence[str]):
    """diffusers' `callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict` as the sampler's
    `callback(step, timestep, latents) -> latents`; None without a callback. diffusers' `PipelineCallback` and
    `MultiPipelineCallbacks` name their own tensor inputs; only `"latents"` exists in ccedit's pipelines."""
    if callback is None:
        return None
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        tensor_inputs = callback.tensor_inputs
    unknown = [name for name in tensor_inputs if name not in pipe._callback_tensor_inputs]
    if unknown:
        raise InvalidInputError(f"`callback_on_step_end_tensor_inputs` can only name {pipe._callback_tensor_inputs},"
                                f" got {unknown}")

    def step_end(step_index: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        returned = callback(pipe, step_index, timestep, {name: latents for name in tensor_inputs}) or {}
        return returned.get("latents", latents)

    return step_end


def peak_resident_bytes() -> int | None:
    """The process's peak resident set size (the OS keeps no per-call figure); None where `resource` is missing."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def peak_memory_bytes(device: torch.device) -> int | None:
    """The call's peak: the accelerator's since its counters were reset, else the process's peak resident set."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_resident_bytes()
