"""Read the reference fixtures of the original implementation: tiny networks with their inputs and outputs.

A fixture is a safetensors file holding `state.<CCEdit network key>` tensors (float16-exact, cast to float32)
plus inputs and outputs; its geometry sits in `tiny_config.json` next to it, under `files.<name>.geometry_key`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import UserError
from ..models.geometry import Geometry

STATE_PREFIX = "state."


def read_geometry(geometry_file: str | Path, weights_file: str | Path | None = None) -> Geometry:
    """Geometry from a JSON file: a flat geometry object, or a fixture config naming one per weights file.

    Args:
        geometry_file: JSON holding `model_channels`, `channel_mult`, ... directly, or the fixtures'
            `tiny_config.json` whose `files.<name>.geometry_key` names the geometry of each fixture file.
        weights_file: the weights the geometry is for; needed to pick the entry of a fixture config.
    """
    path = Path(geometry_file)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read geometry file {path}: {e}") from None
    if "model_channels" in data:
        return Geometry.from_dict(data)
    if "files" in data and weights_file is not None:
        name = Path(weights_file).name
        for key, entry in data["files"].items():
            if isinstance(entry, dict) and entry.get("file") == name:
                return Geometry.from_dict(data[entry.get("geometry_key", "geometry")])
        if "sampling_fixtures" in data:
            for entry in data["sampling_fixtures"].get("files", {}).values():
                if isinstance(entry, dict) and entry.get("file") == name:
                    # Sampling runs use the first geometry's networks (ref §6).
                    return Geometry.from_dict(data["geometry"])
        raise UserError(f"{path} has no geometry for {name}: add it under `files` or pass a flat geometry JSON")
    raise UserError(f"{path} is not a geometry file: expected `model_channels`, `channel_mult`, ... or `files`")


def default_geometry_file(weights_file: str | Path) -> Path:
    return Path(weights_file).with_name("tiny_config.json")


def split_fixture(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`(network state without the prefix, cast to float32; everything else)`."""
    state = {k[len(STATE_PREFIX) :]: v.float() for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}
    return state, rest


@dataclass
class Fixture:
    path: Path
    geometry: Geometry
    state: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]

    @property
    def is_sampling(self) -> bool:
        return "x_T" in self.tensors


def load_fixture(path: str | Path, geometry_file: str | Path | None = None) -> Fixture:
    """Load a reference fixture and the geometry of its network."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"fixture not found: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise UserError(f"cannot read fixture {path}: {e}") from None
    state, rest = split_fixture(tensors)
    if not state:
        raise UserError(f"{path} holds no `state.*` tensors: not a ccedit reference fixture")
    geometry = read_geometry(geometry_file or default_geometry_file(path), path)
    return Fixture(path, geometry, state, rest)
