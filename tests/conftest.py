"""Shared test fixtures: paths to the reference data and tiny randomly initialised components."""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import os
import subprocess
from pathlib import Path

# Tests never touch the network; huggingface_hub reads this once, at import, so it is set before anything loads it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The sample clips, the edited kitten keyframe and the BalanceCC example ship with the repository (assets/README.md).
ASSETS = REPO / "assets"
VIDEOS = ASSETS
KEYFRAME = ASSETS / "kitten_frame0_dog.png"  # an edit of kitten.mp4 into a dog
BALANCECC = ASSETS / "balancecc_example.json"
# Fixtures recorded from the original implementation (25 MB, not in the repository): where the project's reference
# data folder is placed beside the checkout, or wherever CCEDIT_REFERENCE points.
REFERENCE = Path(os.environ.get("CCEDIT_REFERENCE") or REPO.parent / "shared" / "reference" / "ccedit")


def load_tool(name: str):
    """A script of `tools/` imported as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_within_ulps(actual, expected, ulps: int = 1) -> None:
    """float32 values equal up to `ulps` units in the last place.

    The reference schedules were computed with float32 square roots, exponentials and logarithms, which CPU math
    libraries round differently by one ulp (the same torch gives other last bits on other processors); integer
    timesteps and quantised indices stay exact, and the sigma table is the original's own (`sigma_table.py`).
    """
    actual = torch.as_tensor(actual, dtype=torch.float32).reshape(-1)
    expected = torch.as_tensor(expected, dtype=torch.float32).reshape(-1)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    distance = (actual.view(torch.int32).long() - expected.view(torch.int32).long()).abs()
    assert int(distance.max()) <= ulps, f"{int(distance.max())} ulps apart: {actual} vs {expected}"


def require(path: Path) -> Path:
    """`path`, a fixture of the original implementation under REFERENCE; the test is skipped, saying where the
    fixtures come from, when it is not there."""
    if not path.exists():
        pytest.skip(f"reference fixture not found: {path}. The fixtures recorded from the original CCEdit "
                    "(RuoyuFeng/CCEdit@303f7f1) are not in the repository: place the project's reference data folder "
                    "reference/ccedit/ at ../shared/reference/ccedit beside the checkout, or set CCEDIT_REFERENCE "
                    "to it (README: Tests)")
    return path


@functools.cache
def _traced_estimate(settings: tuple):
    from ccedit.memory import estimate_edit_memory

    return estimate_edit_memory(**dict(settings))


def memory_estimate(**settings):
    """`ccedit.memory.estimate_edit_memory(**settings)` for a named geometry, traced once per test session for each
    distinct set of settings (a trace of the released size takes seconds, and several tests ask for the same one);
    each caller gets its own copy."""
    from ccedit.memory import estimate_edit_memory

    settings = inspect.signature(estimate_edit_memory).bind(**settings)
    settings.apply_defaults()  # a setting left at its default and one given as the default are the same trace
    return copy.deepcopy(_traced_estimate(tuple(sorted(settings.arguments.items()))))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root and a kernel that lets the test mount one); skipped where it cannot be made."""
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill_disk(disk: Path, leave_bytes: int) -> None:
    """Fill `disk` with a file until `leave_bytes` are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The reference fixtures were made on 1 thread; fewer threads also keep runs comparable across machines.
    torch.set_num_threads(1)
    yield
