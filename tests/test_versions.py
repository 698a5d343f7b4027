"""The install keeps the user's torch build, and a torchvision that does not fit it is named in one line."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement

from ccedit import versions
from ccedit.cli import main
from tests.conftest import REPO
from tests.test_cli_safety import one_error_line


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("installed", ["2.13.0+cpu", "2.14.1+cpu", "2.14.1", "2.14.1+cu130", "2.13.0"])
def test_an_installed_torch_of_any_build_satisfies_the_requirements(installed):
    # pip replaces an installed torch the requirement excludes: a CPU-only build by the CUDA one and its wheels.
    assert _requirements()["torch"].specifier.contains(installed), installed


def test_no_requirement_names_a_build():
    for requirement in _requirements().values():
        assert "+" not in str(requirement.specifier), requirement


@pytest.mark.parametrize(
    ("torch", "torchvision", "platform", "expected"),
    [
        ("2.14.1+cpu", "0.29.1+cpu", "linux", None),
        ("2.14.1", "0.29.1", "linux", None),
        ("2.13.0", "0.28.0", "darwin", None),
        ("2.13.0+cpu", "0.28.0", "darwin", None),  # PyPI's torchvision for macOS is a CPU build
        ("2.14.1+cu130", "0.29.1+cu130", "linux", None),
        ("2.13.0+cpu", "0.29.1+cpu", "linux", "torch 2.13 needs torchvision 0.28"),
        ("2.13.0+cpu", "0.28.0", "linux", "a CUDA build beside a CPU-only torch"),
        ("2.14.1", "0.29.1+cpu", "linux", "a CPU-only build beside a CUDA torch"),
    ],
)
def test_torchvision_mismatch(torch, torchvision, platform, expected):
    found = versions.torchvision_mismatch(torch, torchvision, platform=platform)
    if expected is None:
        assert found is None, found
    else:
        assert expected in found and f"torchvision {torchvision} does not match torch {torch}" in found, found
        assert "torchvision==0.28.*" in found or "torchvision==0.29.*" in found, found


def test_a_command_with_a_mismatched_torchvision_stops_in_one_line(monkeypatch, capsys, tmp_path):
    installed = {"torch": "2.13.0+cpu", "torchvision": "0.29.1"}
    monkeypatch.setattr(versions, "_installed", installed.get)
    assert main(["keyframe", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "k.png")]) == 2
    line = one_error_line(capsys)
    assert "torchvision 0.29.1 does not match torch 2.13.0+cpu" in line, line
    assert "--index-url https://download.pytorch.org/whl/cpu" in line, line
    assert not (tmp_path / "k.png").exists()


def test_env_names_the_mismatch(monkeypatch, capsys):
    installed = {"torch": "2.13.0+cpu", "torchvision": "0.28.0+cu126"}
    monkeypatch.setattr(versions, "_installed", installed.get)
    assert main(["env"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("problem: torchvision 0.28.0+cu126 does not match torch 2.13.0+cpu"), out
