"""Training the learnable parts (temporal layers, cross-frame attention, appearance branch) through accelerate."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ROLES, TrainConfig, TrainDataConfig, TrainModelConfig, TrainRecipeConfig

__all__ = ["ROLES", "TrainConfig", "TrainDataConfig", "TrainModelConfig", "TrainRecipeConfig", "load_train_config", "train"]


def load_train_config(file: str | os.PathLike, dotlist: list[str] = ()) -> TrainConfig:
    """The schema's defaults, then `file`, then `key=value` settings (unknown keys fail by name, numbers out of
    range or not finite by name and bound)."""
    from ..config import load_config
    from ..config_checks import TRAIN_BOUNDS, check_numbers

    config = load_config(TrainConfig, (), [Path(file)], None, dotlist, hint="ccedit/training/config.py")
    check_numbers(config, TRAIN_BOUNDS)
    return config


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False):
    """See `ccedit.training.trainer.train`."""
    from .trainer import train as run

    return run(config, resume, overwrite)
