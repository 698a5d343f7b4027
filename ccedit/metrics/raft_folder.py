"""The folder a RAFT flow model is saved in: `config.json` (its torchvision architecture) + `model.safetensors`.

Written by `save_raft` (the tiny model's `save_tiny_raft` too) and read by `loading.load_raft`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

RAFT_ARCHITECTURES = ("raft_large", "raft_small")
RAFT_CONFIG = "config.json"
RAFT_WEIGHTS = "model.safetensors"


def save_raft(model: torch.nn.Module, folder: str | os.PathLike, architecture: str) -> Path:
    """Write a torchvision RAFT as `config.json` (its architecture) + `model.safetensors`, loadable by `load_raft`."""
    from safetensors.torch import save_file

    if architecture not in RAFT_ARCHITECTURES:
        raise ValueError(f"`architecture` must be one of {RAFT_ARCHITECTURES}, got {architecture!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RAFT_CONFIG).write_text(json.dumps({"architecture": architecture}) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / RAFT_WEIGHTS)
    return folder
