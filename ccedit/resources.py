"""The memory guard: whether the machine has the memory an edit will need, checked before anything is decoded, and
the one-line refusal when it does not.

The memory available is the lower of the computer's and what the control group's limit leaves (a container's
memory limit, cgroup v1 or v2): a process over its group's limit is killed however much the computer has free.

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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .memory import MemoryEstimate

DECODE_CHUNK_FRAMES = 32  # `io.read_video`'s chunk_size: source-size frames held at once while fitting
CUDA_RUNTIME = "CUDA runtime"
OFFLOADED_WEIGHTS = "offloaded weights"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number; anything this large is no limit.
_NO_CGROUP_LIMIT = 1 << 60

# Which setting shrinks each term, for the refusal's advice; the weights' depend on the settings
# (`_weights_option`). The size shrinks every term, so it is always named; a term it alone reduces maps to it.
_SIZE = "video.height/video.width"  # the working size, which every term grows with
_REDUCED_BY = {
    # host side
    "frames": "video.num_frames",
    "edited frames": "video.num_frames",
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


def available_host_memory(cgroup_root: str | os.PathLike | None = None,
                          self_cgroup: str | os.PathLike | None = None) -> int:
    """Bytes this process can have now without swapping or being killed: the lower of the computer's available
    memory (psutil's `available`) and what its control group's memory limit leaves (a container's limit)."""
    import psutil

    host = int(psutil.virtual_memory().available)
    cgroup = cgroup_available_memory(cgroup_root, self_cgroup)
    return host if cgroup is None else min(host, cgroup)


def cgroup_available_memory(root: str | os.PathLike | None = None,
                            self_cgroup: str | os.PathLike | None = None) -> int | None:
    """What the memory limits of this process's control group and of every group above it leave, in bytes: the
    smallest `limit - (usage - inactive file cache)`; None without a limit (or where there are no cgroups).

    cgroup v2 (`<root>/<group>/memory.max`, `memory.current`) and v1 (`<root>/memory/<group>/memory.limit_in_bytes`,
    `memory.usage_in_bytes`) both; the group is the one `/proc/self/cgroup` names. Reclaimable file cache
    (`inactive_file` in `memory.stat`) counts as available, as the kernel reclaims it before killing anything.

    Args:
        root: where the cgroup file systems are mounted (None: `CGROUP_ROOT`, `/sys/fs/cgroup`).
        self_cgroup: the process's cgroup membership file (None: `SELF_CGROUP`, `/proc/self/cgroup`).
    """
    root = Path(CGROUP_ROOT if root is None else root)
    groups = _cgroup_paths(Path(SELF_CGROUP if self_cgroup is None else self_cgroup))
    found = []
    for base, group, files in (
        (root, groups.get("v2", "/"), ("memory.max", "memory.current", "inactive_file")),
        (root / "memory", groups.get("memory", "/"), ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                      "total_inactive_file")),
    ):
        folder = base / group.lstrip("/")
        while True:  # the group and every group above it, up to the root: the tightest limit applies
            left = _cgroup_left(folder, *files)
            if left is not None:
                found.append(left)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(found) if found else None


def _cgroup_paths(self_cgroup: Path) -> dict[str, str]:
    """The process's group per hierarchy: `v2` for the unified one, `memory` for v1's memory controller."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["memory"] = path
    return paths


def _cgroup_left(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """`limit - (usage - inactive file cache)` of one group; None when it has no limit or cannot be read."""
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_CGROUP_LIMIT:
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key and value.strip().isdigit():
                inactive = int(value)
    except OSError:
        pass
    return max(0, int(limit_text) - max(0, usage - inactive))


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
        options = [o for o in options if o != _SIZE]
        options.insert(1, _SIZE)  # the size shrinks every term: always worth naming
        raise UserError(
            f"this edit needs about {_gb(needed)} of {where} ({shown}) but {_gb(available)} is available: "
            f"reduce it with {', '.join(options[:3])}, or set model.check_memory=false to try anyway"
        )


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"
