"""Whether the installed torchvision matches the installed torch, read from the package metadata alone.

A torchvision built for another torch (another release, or a CUDA build beside a CPU-only torch) fails deep inside
transformers' or diffusers' imports with "operator torchvision::nms does not exist" or an undefined symbol. pip
pairs the releases (each torchvision pins its torch), but not the builds, so a CPU-only torch installed from
PyTorch's CPU index next to a torchvision from PyPI is only found here. Nothing is imported: this runs before any
command does its work.
"""

from __future__ import annotations

import sys
from importlib import metadata

from .errors import UserError

# torchvision 0.15 was released with torch 2.0, and each torch 2.x release since with torchvision 0.(x + 15).
_TORCHVISION_MINOR_OFFSET = 15


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release_and_build(version: str) -> tuple[tuple[int, ...], str]:
    """`"2.13.0+cpu"` -> `((2, 13, 0), "cpu")`; the build is `""` for a version without a local label."""
    public, _, build = version.partition("+")
    release = []
    for part in public.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        release.append(int(digits))
        if digits != part:  # a pre-release such as 0rc1 ends the release numbers
            break
    return tuple(release), build


_BUILD_NAMES = {"cpu": "CPU-only", "cu": "CUDA", "rocm": "ROCm", "xpu": "XPU"}


def _build_name(build: str, platform: str) -> str:
    """What a build label says about the device: `"cpu"` -> CPU-only, `"cu130"` -> CUDA; no label is PyPI's build,
    CUDA on Linux and CPU-only elsewhere."""
    if not build:
        return "CUDA" if platform.startswith("linux") else "CPU-only"
    return next((name for prefix, name in _BUILD_NAMES.items() if build.startswith(prefix)), build)


def torchvision_mismatch(torch_version: str | None = None, torchvision_version: str | None = None,
                         platform: str = sys.platform) -> str | None:
    """Why the torchvision does not fit the torch (one line), or None when it fits or either is not installed.

    Args:
        torch_version, torchvision_version (`str`, *optional*): The versions to compare; the installed ones by
            default.
        platform (`str`): `sys.platform`, which decides what a version without a build label is (`_build_name`).
    """
    torch_version = torch_version or _installed("torch")
    torchvision_version = torchvision_version or _installed("torchvision")
    if not torch_version or not torchvision_version:
        return None
    (torch_release, torch_build), (vision_release, vision_build) = map(
        _release_and_build, (torch_version, torchvision_version))
    if len(torch_release) < 2 or len(vision_release) < 2 or torch_release[0] != 2 or vision_release[0] != 0:
        return None  # a numbering this rule does not know
    needed = f"0.{torch_release[1] + _TORCHVISION_MINOR_OFFSET}"
    if vision_release[1] != torch_release[1] + _TORCHVISION_MINOR_OFFSET:
        why = f"torch {torch_release[0]}.{torch_release[1]} needs torchvision {needed}"
    elif _build_name(torch_build, platform) != _build_name(vision_build, platform):
        why = (f"a {_build_name(vision_build, platform)} build beside a {_build_name(torch_build, platform)} "
               "torch")
    else:
        return None
    index = f" --index-url https://download.pytorch.org/whl/{torch_build}" if torch_build else ""
    return (f"torchvision {torchvision_version} does not match torch {torch_version} ({why}): install the matching "
            f"one with `pip install --force-reinstall --no-deps torchvision=={needed}.*{index}`")


def check_torchvision() -> None:
    """Refuse to run with a torchvision that does not fit the torch, in one line, before it fails in an import."""
    mismatch = torchvision_mismatch()
    if mismatch:
        raise UserError(mismatch)
