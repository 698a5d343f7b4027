"""How much memory an edit will need, estimated from the clip's header and the settings before anything is decoded,
and the one-line refusal when the machine does not have it.

The estimate is deliberately simple and on the generous side: its job is to turn a certain crash (a 4x4000 GIF
whose derived working size has a long side of 128000 pixels, a whole hour-long clip held at full size) into one line
that names the option to change, not to predict the peak exactly. Each term is written out in `estimate_edit_memory`
so that a reader can check it against what the code holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

# Bytes of network activations per pixel of each frame the network evaluates, per byte of the compute dtype. An
# SD-1.5 UNet with its ControlNet, temporal layers and appearance branch keeps its skip connections, the ControlNet
# residuals and one attention or feed-forward block's working tensors alive at a time: a few hundred bytes per pixel
# in float16 (SDPA never materialises the attention matrix). 256 per dtype byte (512 B/pixel in float16, 1 KiB in
# float32) is a rough upper figure; the tiny model's whole run measured about 450 B/pixel per evaluated frame.
ACTIVATION_BYTES_PER_PIXEL_PER_DTYPE_BYTE = 256
# Copies of the clip's latents alive while denoising: the latents, the initial noise, the source latents (SDEdit,
# prior), the fused prediction being summed over windows, the denoised estimate and the scheduler's state.
LATENT_COPIES = 6
LATENT_CHANNELS, LATENT_FACTOR = 4, 8  # SD's VAE: 4 channels at 1/8 of the frame's side
DECODE_CHUNK_FRAMES = 32  # `io.read_video`'s chunk_size: source-size frames held at once while fitting
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass
class MemoryEstimate:
    """An edit's estimated memory in bytes, by term, split by where it lives.

    Args:
        host (`dict[str, int]`): terms held in the computer's memory (frames, maps; everything on a CPU run).
        device (`dict[str, int]`): terms held in the accelerator's memory (empty when the model runs on the CPU).
    """

    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())

    @property
    def device_bytes(self) -> int:
        return sum(self.device.values())


def estimate_edit_memory(
    *,
    num_frames: int,
    size: tuple[int, int],
    source_size: tuple[int, int],
    num_maps: int = 1,
    window_length: int,
    guidance: bool = True,
    weights_bytes: int = 0,
    dtype_bytes: int = 4,
    on_accelerator: bool = False,
) -> MemoryEstimate:
    """Estimate the memory of editing `num_frames` frames at `size`.

    Per frame of the clip (grow with --frames and with --height/--width):
      - `frames`: the decoded frames, uint8 RGB at the working size, and the edited frames, the same again;
      - `structure`: `num_maps` uint8 maps of 3 channels per frame, plus one annotator's float32 result for the whole
        clip (gathered, then clamped into a copy) before it is turned into uint8;
      - `latents`: `LATENT_COPIES` float32 latents of 4 x (H/8) x (W/8) per frame.
    Per window (grow with --window and with --height/--width, not with the clip's length):
      - `activations`: the network evaluates `window_length` frames at a time, twice with classifier-free guidance,
        at `ACTIVATION_BYTES_PER_PIXEL_PER_DTYPE_BYTE * dtype_bytes` bytes per pixel of each.
    Fixed:
      - `decoding`: up to `DECODE_CHUNK_FRAMES` frames at the source size, decoded and then resized;
      - `weights`: the model's weight files as stored.

    Args:
        num_frames (`int`): Frames the edit selects.
        size (`tuple[int, int]`): Working `(height, width)`.
        source_size (`tuple[int, int]`): The clip's `(height, width)`.
        num_maps (`int`, defaults to 1): Structure annotators.
        window_length (`int`): Frames per network call (`windows.length`, by default `model.num_frames`).
        guidance (`bool`, defaults to `True`): Whether classifier-free guidance doubles each call's batch.
        weights_bytes (`int`, defaults to 0): Size of the model's weight files.
        dtype_bytes (`int`, defaults to 4): Bytes per value of the network's dtype.
        on_accelerator (`bool`, defaults to `False`): Whether the network, its weights and the latents live in an
            accelerator's memory rather than the computer's.

    Returns:
        `MemoryEstimate`: the terms above, in bytes.
    """
    height, width = size
    pixels = height * width
    latent_pixels = math.ceil(height / LATENT_FACTOR) * math.ceil(width / LATENT_FACTOR)
    frame_bytes = pixels * 3  # uint8 RGB
    host = {
        "frames": 2 * num_frames * frame_bytes,
        "structure": num_maps * num_frames * frame_bytes + 2 * num_frames * frame_bytes * 4,
        "decoding": min(num_frames, DECODE_CHUNK_FRAMES) * (source_size[0] * source_size[1] * 3 + frame_bytes),
    }
    evaluated = min(window_length, num_frames) * (2 if guidance else 1)
    network = {
        "latents": LATENT_COPIES * num_frames * LATENT_CHANNELS * latent_pixels * 4,
        "activations": evaluated * pixels * ACTIVATION_BYTES_PER_PIXEL_PER_DTYPE_BYTE * dtype_bytes,
        "weights": weights_bytes,
    }
    if on_accelerator:
        return MemoryEstimate(host=host, device=network)
    return MemoryEstimate(host={**host, **network})


def weights_size(model: str) -> int:
    """Bytes of the weight files in a local model folder (0 for the built-in tiny model or a hub id)."""
    folder = Path(model).expanduser()
    if model == "tiny" or not folder.is_dir():
        return 0
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(WEIGHT_SUFFIXES))
    return total


def available_host_memory() -> int:
    """Bytes the computer can give this process now without swapping (psutil's `available`)."""
    import psutil

    return int(psutil.virtual_memory().available)


def available_device_memory(device) -> int | None:
    """Free bytes on a CUDA device; None for other devices (their memory is the computer's, or unknown)."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


# Which option shrinks each term, for the refusal's advice (the size shrinks every term, so it is always named).
_REDUCED_BY = {
    "frames": "--frames",
    "structure": "--frames",
    "latents": "--frames",
    "activations": "--window",
    "decoding": "--height/--width",
    "weights": "model.dtype=float16",
}


def check_memory(estimate: MemoryEstimate, available_host: int, available_device: int | None = None) -> None:
    """Raise a one-line `UserError` when the estimate exceeds the available memory, naming the largest terms and
    the options that reduce them."""
    for where, terms, available in (("memory", estimate.host, available_host),
                                    ("accelerator memory", estimate.device, available_device)):
        needed = sum(terms.values())
        if available is None or not terms or needed <= available:
            continue
        largest = sorted(terms.items(), key=lambda item: -item[1])
        shown = ", ".join(f"{name} {_gb(value)}" for name, value in largest[:3] if value)
        options = []
        for name, value in largest:
            option = _REDUCED_BY[name]
            if value and option not in options:
                options.append(option)
        options = [o for o in options if o != "--height/--width"]
        options.insert(1, "--height/--width")  # the size shrinks every term: always worth naming
        raise UserError(
            f"this edit needs about {_gb(needed)} of {where} ({shown}) but {_gb(available)} is available: "
            f"reduce it with {', '.join(options[:3])}, or pass --force to try anyway"
        )


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"
