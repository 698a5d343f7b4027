"""The memory guard: what an edit will need, placed in the memory it will occupy, and the one-line refusal, before
any frame is decoded, of an edit that needs more than the machine has (`resources.py` says what it has).

`edit_memory_need` is the one estimate of an edit's memory, which `--dry-run` (`plan.py`) prints and the guard
(`check_memory_before_decoding`) checks. What the networks hold (weights, the tensors held across a stage, one
call's working memory, and the decoded frames the pipeline returns) is the memory model's
(`memory.estimate_edit_memory`, traced at the real shapes, under the edit's settings: `estimate_network_memory`): its
peak stage, term by term. This module adds only what the memory model does not cover, from the clip's header: the
decoded source frames, the structure maps and the source-size decoding chunk. It places every term in the
computer's or the accelerator's memory and refuses with one line naming the largest terms and the options that
reduce them.

The host terms are deliberately generous (they are added as if all were alive at once): their job is to turn a
certain crash (a 4x4000 GIF whose derived working size has a long side of 128000 pixels, a whole hour-long clip held
at full size) into one line that names the option to change.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import resources
from .config import EditConfig, KeyframeSpec, structure_controlnets, window_length
from .errors import UserError
from .io import video_info
from .memory import MemoryEstimate
from .pipelines.conditions import keyframes_act
from .preparation import DECODE_CHUNK_FRAMES
from .selection import clip_working_size, selected_frame_count

CUDA_RUNTIME = "CUDA runtime"
OFFLOADED_WEIGHTS = "offloaded weights"
EDITED_FRAMES = "edited frames"

# Which setting shrinks each term, for the refusal's advice; the weights' depend on the settings
# (`_weights_option`). The size shrinks every term, so it is always named; a term it alone reduces maps to it.
_SIZE = "video.height/video.width"  # the working size, which every term grows with
_REDUCED_BY = {
    # host side
    "frames": "video.num_frames",
    EDITED_FRAMES: "video.num_frames",
    "structure": "video.num_frames",
    "decoding": _SIZE,
    # the memory model's terms (`MemoryEstimate.stage_terms`)
    "clip latents and scheduler state": "video.num_frames",
    "clip hint encodings": "video.num_frames",
    "appearance residuals of the next timesteps": _SIZE,
    "clip latents": "video.num_frames",
    "window call": "windows.length",
    "hint encoding": _SIZE,  # one chunk of `ENCODE_CHUNK_FRAMES` frames
    "VAE decode": _SIZE,  # `model.vae_slicing=true` when it is off
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
        network (`MemoryEstimate`, *optional*): the memory model's estimate the network terms come from (None when
            no network runs: `ccedit keyframe`).
    """

    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)
    reduced_by: dict[str, str | None] = field(default_factory=lambda: dict(_REDUCED_BY))
    network: MemoryEstimate | None = None

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())

    @property
    def device_bytes(self) -> int:
        return sum(self.device.values())


def host_memory_terms(
    *, num_frames: int, size: tuple[int, int], source_size: tuple[int, int], num_maps: int = 1
) -> dict[str, int]:
    """The host-side terms of editing `num_frames` frames at `size` that the memory model does not cover, in bytes.

    Per frame of the clip (grow with video.num_frames and with the working size):
      - `frames`: the decoded frames, uint8 RGB at the working size;
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
        "structure": num_maps * num_frames * frame_bytes + 2 * num_frames * frame_bytes * 4,
        "decoding": min(num_frames, DECODE_CHUNK_FRAMES) * (source_size[0] * source_size[1] * 3 + frame_bytes),
    }


def place_memory_terms(network: MemoryEstimate | None, host: dict[str, int]) -> MemoryNeed:
    """The host terms (`host_memory_terms`) and the networks' peak (`network.peak_terms()`), each where it lives.

    - On a CPU run the networks' peak is in the computer's memory (the memory model's decoding stage holds the
      edited frames there).
    - On an accelerator its peak is the accelerator's, with the CUDA runtime (`runtime_bytes`) on a GPU, and the
      edited frames (`network.edited_frames_bytes`) are the computer's.
    - Under model offload (`network.cpu_offload`) the accelerator holds the offloaded peak and the computer
      every network's weights besides.
    - Without networks (`network=None`: `ccedit keyframe` only decodes and fits the frames), the decoded frames
      and the decoding chunk.
    """
    if network is None:
        return MemoryNeed(host={k: host[k] for k in ("frames", "decoding")})
    reduced_by = {**_REDUCED_BY, "weights": _weights_option(network), OFFLOADED_WEIGHTS: _weights_option(network)}
    if not network.vae_slicing:
        reduced_by["VAE decode"] = "model.vae_slicing=true"
    peak = network.peak_terms()
    if network.device_type == "cpu":
        return MemoryNeed(host={**host, **peak}, reduced_by=reduced_by, network=network)
    host = {"frames": host["frames"], EDITED_FRAMES: network.edited_frames_bytes, **host}
    if network.device_type == "cuda":
        peak[CUDA_RUNTIME] = network.runtime_bytes
    if network.cpu_offload:
        host[OFFLOADED_WEIGHTS] = sum(network.weights.values())
    return MemoryNeed(host=host, device=peak, reduced_by=reduced_by, network=network)


def _weights_option(network: MemoryEstimate) -> str | None:
    """What shrinks the networks' weights: half precision from float32, else model offload on a GPU without it."""
    if network.dtype.itemsize == 4:
        return "model.dtype=float16"
    if network.device_type == "cuda" and not network.cpu_offload:
        return "model.cpu_offload=true"
    return None


def acting_keyframes(cfg: EditConfig, keyframes: Sequence) -> list:
    """The keyframes that act on the edit: none at `sampling.appearance_scale=0`, where they get no windows of
    their own and no appearance branch."""
    return list(keyframes) if keyframes_act(len(keyframes), cfg.sampling.appearance_scale) else []


def estimate_network_memory(
    cfg: EditConfig, *, num_frames: int, height: int, width: int, keyframes: Sequence, device: torch.device
) -> MemoryEstimate:
    """The memory model's estimate of an edit under `cfg` on `device`: the dtype, geometry, offload and VAE slicing
    the edit will load with; `keyframes` (indices or `KeyframeSpec`s) only count when they act."""
    from .kinds import kind_for
    from .pipelines.loading import offloads

    settings = dict(
        height=height, width=width, num_frames=num_frames, window_length=window_length(cfg),
        dtype=kind_for(cfg.model.path).main_dtype(cfg.model.dtype, device), guidance=cfg.sampling.guidance_scale > 1,
        keyframe=bool(acting_keyframes(cfg, keyframes)), cpu_offload=offloads(cfg.model.cpu_offload, device),
        vae_slicing=cfg.model.vae_slicing, device_type=device.type,
    )
    parts = json.dumps(cfg.model.parts, sort_keys=True, default=str)
    model = (cfg.model.path, tuple(structure_controlnets(cfg)), parts)
    return copy.deepcopy(_traced_estimate(model, tuple(sorted(settings.items()))))  # callers may add notes


# A process that edits many clips with the same settings (an evaluation, a batch, the test suite) traces each
# distinct estimate once: the trace on the meta device costs seconds, more than a tiny edit itself.
@functools.lru_cache(maxsize=64)
def _traced_estimate(model: tuple[str, tuple, str], settings: tuple) -> MemoryEstimate:
    from .kinds import estimate_memory

    path, controlnets, parts = model
    return estimate_memory(path, controlnets, json.loads(parts), **dict(settings))  # the kind decides how


def edit_memory_need(
    cfg: EditConfig, *, num_frames: int, size: tuple[int, int], source_size: tuple[int, int],
    keyframes: Sequence = (), with_model: bool = True,
) -> MemoryNeed:
    """What an edit of `num_frames` frames at `size` (read from a clip of `source_size`) under `cfg` needs, and where.

    Args:
        keyframes: the job's keyframes (indices or `KeyframeSpec`s): only whether any acts matters (with one the
            keyframe model runs its appearance branch).
        with_model: whether networks run; `ccedit keyframe` only decodes and fits the frames.
    """
    network = None
    if with_model:
        from .pipelines.loading import resolve_device

        network = estimate_network_memory(cfg, num_frames=num_frames, height=size[0], width=size[1],
                                          keyframes=keyframes, device=resolve_device(cfg.model.device))
    host = host_memory_terms(num_frames=num_frames, size=size, source_size=source_size,
                             num_maps=len(cfg.structure.annotators))
    return place_memory_terms(network, host)


def check_memory_before_decoding(
    input_path: str | Path, cfg: EditConfig, *, keyframes: Sequence[KeyframeSpec] = (), with_model: bool = True
) -> None:
    """Refuse with one line, before any frame is decoded, an edit whose memory (`edit_memory_need`, from the clip's
    header) exceeds what the machine has; `model.check_memory=false` (--force) skips it. A clip that cannot be read
    is left to the reader, which says why in its own words.

    `keyframes` are the job's keyframe specs: the frames they show are resolved after decoding and are not needed.
    `with_model=False` (`ccedit keyframe`) only decodes and fits the frames: no network is traced.
    """
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
    need = edit_memory_need(cfg, num_frames=num_frames, size=size, source_size=source_size, keyframes=keyframes,
                            with_model=with_model)
    available_device = None
    if need.device:
        from .pipelines.loading import resolve_device

        available_device = resources.available_device_memory(resolve_device(cfg.model.device))
    check_memory(need, resources.available_host_memory(), available_device)


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
        options = [o for o in options if o != _SIZE]
        options.insert(1, _SIZE)  # the size shrinks every term: always worth naming
        raise UserError(
            f"this edit needs about {_gb(needed)} of {where} ({shown}) but {_gb(available)} is available: "
            f"reduce it with {', '.join(options[:3])}, or set model.check_memory=false to try anyway"
        )


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"
