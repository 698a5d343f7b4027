"""The memory guard: whether the machine has the memory an edit will need, checked before anything is decoded, and
the one-line refusal when it does not.

What the networks hold (weights, the tensors held across a stage, one call's working memory) is the memory model's
(`memory.estimate_edit_memory`, traced at the real shapes): its peak stage, term by term. This module adds the host
side, which the memory model does not cover, from the clip's header (decoded frames, structure maps, the source-size
decoding chunk), places every term in the memory it will occupy (the computer's or the accelerator's) and refuses
with one line naming the largest terms and the options that reduce them.

The host terms are deliberately generous (they are added as if all were alive at once): their job is to turn a
certain crash (a 4x4000 GIF whose derived working size has a long side of 128000 pixels, a whole hour-long clip held
at full size) into one line that names the option to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .memory import MemoryEstimate

DECODE_CHUNK_FRAMES = 32  # `io.read_video`'s chunk_size: source-size frames held at once while fitting
CUDA_RUNTIME = "CUDA runtime"
OFFLOADED_WEIGHTS = "offloaded weights"

# Which option shrinks each term, for the refusal's advice; the weights' depend on the settings
# (`_weights_option`). The size shrinks every term, so it is always named; a term it alone reduces maps to it.
_REDUCED_BY = {
    # host side
    "frames": "--frames",
    "edited frames": "--frames",
    "structure": "--frames",
    "decoding": "--height/--width",
    # the memory model's terms (`MemoryEstimate.stage_terms`)
    "clip latents and scheduler state": "--frames",
    "clip hint encodings": "--frames",
    "appearance residuals of the next timesteps": "--height/--width",
    "clip latents": "--frames",
    "window call": "--window",
    "hint encoding": "--height/--width",  # one chunk of `ENCODE_CHUNK_FRAMES` frames
    "VAE decode": "--height/--width",  # `model.vae_slicing=true` when it is off
    CUDA_RUNTIME: None,
}


@dataclass
class MemoryNeed:
    """An edit's memory in bytes, by term, split by where it lives.

    Args:
        host (`dict[str, int]`): terms held in the computer's memory (frames, maps; the networks' too on a CPU run,
            and all their weights under model offload).
        device (`dict[str, int]`): terms held in the accelerator's memory (empty when the networks run on the CPU).
        reduced_by (`dict[str, str | None]`): the option that shrinks each term (None: none does).
    """

    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)
    reduced_by: dict[str, str | None] = field(default_factory=lambda: dict(_REDUCED_BY))

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())

    @property
    def device_bytes(self) -> int:
        return sum(self.device.values())


def host_memory_terms(
    *, num_frames: int, size: tuple[int, int], source_size: tuple[int, int], num_maps: int = 1
) -> dict[str, int]:
    """The host-side terms of editing `num_frames` frames at `size`, in bytes.

    Per frame of the clip (grow with --frames and with --height/--width):
      - `frames`: the decoded frames, uint8 RGB at the working size;
      - `edited frames`: the output, the same again;
      - `structure`: `num_maps` uint8 maps of 3 channels per frame, plus one annotator's float32 result for the whole
        clip (gathered, then clamped into a copy) before it is turned into uint8.
    Fixed:
      - `decoding`: up to `DECODE_CHUNK_FRAMES` frames at the source size, decoded and then resized.

    Args:
        num_frames (`int`): Frames the edit selects.
        size (`tuple[int, int]`): Working `(height, width)`.
        source_size (`tuple[int, int]`): The clip's `(height, width)`.
        num_maps (`int`, defaults to 1): Structure annotators.
    """
    height, width = size
    frame_bytes = height * width * 3  # uint8 RGB
    return {
        "frames": num_frames * frame_bytes,
        "edited frames": num_frames * frame_bytes,
        "structure": num_maps * num_frames * frame_bytes + 2 * num_frames * frame_bytes * 4,
        "decoding": min(num_frames, DECODE_CHUNK_FRAMES) * (source_size[0] * source_size[1] * 3 + frame_bytes),
    }


def edit_memory_need(
    network: MemoryEstimate | None,
    *,
    num_frames: int,
    size: tuple[int, int],
    source_size: tuple[int, int],
    num_maps: int = 1,
) -> MemoryNeed:
    """The host terms (`host_memory_terms`) and the networks' peak (`network.peak_terms()`), each where it lives.

    - On a CPU run the networks' peak is in the computer's memory; the memory model's decoding stage then holds
      the edited frames itself, so they are not counted twice.
    - On an accelerator its peak is the accelerator's, with the CUDA runtime (`runtime_bytes`) on a GPU.
    - Under model offload (`network.cpu_offload`) the accelerator holds the offloaded peak and the computer
      every network's weights besides.
    - Without networks (`network=None`: `ccedit keyframe` only decodes and fits the frames), the decoded frames
      and the decoding chunk.

    Args:
        network (`MemoryEstimate` or `None`): the memory model's estimate under the edit's settings
            (`plan.estimate_network_memory`).
        num_frames, size, source_size, num_maps: as for `host_memory_terms`.
    """
    host = host_memory_terms(num_frames=num_frames, size=size, source_size=source_size, num_maps=num_maps)
    if network is None:
        return MemoryNeed(host={k: host[k] for k in ("frames", "decoding")})
    reduced_by = {**_REDUCED_BY, "weights": _weights_option(network), OFFLOADED_WEIGHTS: _weights_option(network)}
    if not network.vae_slicing:
        reduced_by["VAE decode"] = "model.vae_slicing=true"
    peak = network.peak_terms()
    if network.device_type == "cpu":
        del host["edited frames"]
        return MemoryNeed(host={**host, **peak}, reduced_by=reduced_by)
    if network.device_type == "cuda":
        peak[CUDA_RUNTIME] = network.runtime_bytes
    if network.cpu_offload:
        host[OFFLOADED_WEIGHTS] = sum(network.weights.values())
    return MemoryNeed(host=host, device=peak, reduced_by=reduced_by)


def _weights_option(network: MemoryEstimate) -> str | None:
    """What shrinks the networks' weights: half precision from float32, else model offload on a GPU without it."""
    if network.dtype.itemsize == 4:
        return "model.dtype=float16"
    if network.device_type == "cuda" and not network.cpu_offload:
        return "model.cpu_offload=true"
    return None


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


def check_memory(need: MemoryNeed, available_host: int, available_device: int | None = None) -> None:
    """Raise a one-line `UserError` when the need exceeds the available memory, naming the largest terms and the
    options that reduce them."""
    for where, terms, available in (("memory", need.host, available_host),
                                    ("accelerator memory", need.device, available_device)):
        needed = sum(terms.values())
        if available is None or not terms or needed <= available:
            continue
        largest = sorted(terms.items(), key=lambda item: -item[1])
        shown = ", ".join(f"{name} {_gb(value)}" for name, value in largest[:3] if value)
        options = []
        for name, value in largest:
            option = need.reduced_by.get(name)
            if value and option and option not in options:
                options.append(option)
        options = [o for o in options if o != "--height/--width"]
        options.insert(1, "--height/--width")  # the size shrinks every term: always worth naming
        raise UserError(
            f"this edit needs about {_gb(needed)} of {where} ({shown}) but {_gb(available)} is available: "
            f"reduce it with {', '.join(options[:3])}, or pass --force to try anyway"
        )


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"
