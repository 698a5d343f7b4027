"""What memory the machine has for an edit, for the memory guard (`memory_guard.py`): the computer's and the
accelerator's.

The memory available is the lower of the computer's and what the control group's limit leaves (a container's
memory limit, cgroup v1 or v2): a process over its group's limit is killed however much the computer has free.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number; anything this large is no limit.
_NO_CGROUP_LIMIT = 1 << 60


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
