"""Training states (optimiser, LR schedule, EMA, gradient scaler, random generators) as data files: one safetensors
file each, its tensors as tensors and everything else as JSON in the file's metadata.

`torch.save` would pickle these states, and unpickling a file from a run folder can run code: this format holds
nothing that executes when read. The JSON keeps what a pickle would: tuples, integer dict keys (an optimiser's
state is keyed by parameter index), numpy arrays (numpy's generator state) and exact floats.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import first_line

METADATA_KEY = "ccedit_state"
# Tags of the values plain JSON cannot tell apart; a dict with any key starting with "$" is written as `$items`.
_TENSOR, _TUPLE, _ITEMS, _ARRAY = "$tensor", "$tuple", "$items", "$ndarray"


class DamagedStateError(ValueError):
    """A state file that is not what `write_state` writes: truncated, altered, or another format."""


def write_state(path: str | os.PathLike, state: Any) -> None:
    """Write `state` (nested dicts, lists, tuples, numbers, strings, tensors, numpy arrays) to a safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(tree, allow_nan=False)})


def read_state(path: str | os.PathLike) -> Any:
    """The state `write_state` wrote to `path`, tensors on the CPU; `DamagedStateError` for anything else."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        tree = json.loads(metadata[METADATA_KEY], parse_constant=_refuse_constant)
        return _decode(tree, tensors)
    except DamagedStateError:
        raise
    except Exception as error:  # safetensors, JSON and shape errors all mean the same here: not a state file
        reason = first_line(error)
        raise DamagedStateError(f"{Path(path).name} is not a readable state file ({reason})") from error


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # a copy: safetensors refuses shared storage
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a training state holds the non-finite number {value}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {_ITEMS: [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__} in a training state")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if _TENSOR in tree:
        return tensors[tree[_TENSOR]]
    if _TUPLE in tree:
        return tuple(_decode(v, tensors) for v in tree[_TUPLE])
    if _ARRAY in tree:
        return np.asarray(tree[_ARRAY], dtype=np.dtype(tree["dtype"]))
    if _ITEMS in tree:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in tree[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in tree.items()}


def _refuse_constant(name: str) -> float:
    raise DamagedStateError(f"a training state holds {name}")
