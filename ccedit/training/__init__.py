"""Training the learnable parts (temporal layers, cross-frame attention, appearance branch) through accelerate."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ROLES, TrainConfig, TrainDataConfig, TrainModelConfig, TrainRecipeConfig

__all__ = ["ROLES", "TrainConfig", "TrainDataConfig", "TrainModelConfig", "TrainRecipeConfig", "load_train_config", "train"]


def load_train_config(file: str | os.PathLike, dotlist: list[str] = ()) -> TrainConfig:
    """The schema's defaults, then `file`, then `key=value` settings (unknown keys fail by name)."""
    from ..config import load_config

    return load_config(TrainConfig, (), [Path(file)], None, dotlist, hint="ccedit/training/config.py")


def train(config: TrainConfig, resume: bool = False):
    """See `ccedit.training.trainer.train`."""
    from .trainer import train as run

    return run(config, resume)
