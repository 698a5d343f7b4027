"""Parity of ccedit with the original implementation's reference fixtures (network and sampling)."""

from __future__ import annotations

from pathlib import Path

from ..convert.fixtures import load_fixture
from .parity import ParityResult, check_network_fixture
from .sampling_parity import check_sampling_fixture


def check_fixture(path: str | Path, geometry_file: str | Path | None = None) -> ParityResult:
    """Check any reference fixture, network or sampling."""
    fixture = load_fixture(path, geometry_file)
    return check_sampling_fixture(fixture) if fixture.is_sampling else check_network_fixture(fixture)


__all__ = ["ParityResult", "check_fixture", "check_network_fixture", "check_sampling_fixture", "load_fixture"]
