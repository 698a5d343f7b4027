"""Checks of edit settings that need no model: numbers in range, and user layers that run no resolvers.

Kept apart from `config.py`'s merge so that every bound lives in one table. The bounds are where a value stops
being a setting and becomes a mistake (a typo, `inf`, a size no machine can decode), not tuning advice.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, is_dataclass
from enum import StrEnum
from typing import Any

from .errors import InvalidInputError, UserError

MAX_SIDE = 8192  # pixels: 16 times SD-1.5's native 512
MAX_FRAMES = 100_000  # about an hour at 30 fps
MAX_STEPS = 1000  # the length of the diffusion schedule: more steps than noise levels repeat them

# key: (lowest, highest, what the value is); None leaves a side open. Unset (null) values are not checked.
BOUNDS: dict[str, tuple[float | None, float | None, str]] = {
    "model.native_frames": (1, MAX_FRAMES, "frames in the model's window"),
    "model.short_side": (64, MAX_SIDE, "pixels"),
    "video.num_frames": (1, MAX_FRAMES, "frames"),
    "video.fps": (1e-3, None, "frames per second"),
    "video.start": (0, None, "seconds"),
    "video.height": (64, MAX_SIDE, "pixels"),
    "video.width": (64, MAX_SIDE, "pixels"),
    "video.folder_fps": (1e-3, None, "frames per second"),
    "sampling.num_inference_steps": (1, MAX_STEPS, "steps"),
    "sampling.seed": (0, 2**64 - 1, ""),  # what torch.Generator.manual_seed takes
    "structure.cache_max_gb": (0, None, "GB"),
    "model.size_multiple": (1, 512, "pixels"),
    "windows.length": (1, MAX_FRAMES, "frames"),
    "windows.overlap": (0, MAX_FRAMES, "frames"),
}

# The same for training settings (`ccedit/training/config.py`).
TRAIN_BOUNDS: dict[str, tuple[float | None, float | None, str]] = {
    "data.synthetic": (0, 100_000, "clips"),
    "data.num_frames": (1, MAX_FRAMES, "frames"),
    "data.fps": (1e-3, None, "frames per second"),
    "data.height": (8, MAX_SIDE, "pixels"),
    "data.width": (8, MAX_SIDE, "pixels"),
    "data.num_workers": (0, None, "processes"),
    "train.seed": (0, 2**32 - 1, ""),  # numpy's global seed (set at the start of a run) takes no more
    "train.max_steps": (1, None, "steps"),
    "train.batch_size": (1, None, "clips"),
    "train.gradient_accumulation_steps": (1, None, "batches"),
    "train.learning_rate": (0, 1, ""),
    "train.adam_beta1": (0, 0.99999, ""),  # 1 stops the moving average; torch refuses it
    "train.adam_beta2": (0, 0.99999, ""),
    "train.adam_weight_decay": (0, None, ""),
    "train.adam_epsilon": (0, 1, ""),
    "train.lr_warmup_steps": (0, None, "steps"),
    "train.max_grad_norm": (0, None, ""),
    "train.offset_noise": (0, None, ""),
    "train.text_dropout": (0, 1, ""),
    "train.structure_dropout": (0, 1, ""),
    "train.ema_decay": (0, 1, ""),
    "train.checkpoint_every": (1, None, "steps"),
    "train.keep_checkpoints": (1, None, "checkpoints"),
    "train.sample_every": (0, None, "steps"),
    "train.sample_steps": (1, MAX_STEPS, "steps"),
}

# `${name:...}` calls a resolver (`oc.env` reads the environment); `${key}` only refers to another setting.
_RESOLVER_CALL = re.compile(r"(?<!\\)\$\{\s*([A-Za-z_][\w.]*)\s*:")


def check_numbers(config: Any, bounds: dict[str, tuple[float | None, float | None, str]] = BOUNDS) -> None:
    """Raise a one-line `UserError` for a non-finite float anywhere in `config`, or a value outside `bounds`
    (`BOUNDS` for edit settings, `TRAIN_BOUNDS` for training settings)."""
    for key, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, got {value}")
    values = dict(_leaves(config))
    for key, (low, high, unit) in bounds.items():
        value = values.get(key)
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = f"from {_number(low)} to {_number(high)}" if high is not None else f"at least {_number(low)}"
            raise UserError(f"{key} must be {allowed}{' ' + unit if unit else ''}, got {_number(value)}")


# The names a setting may take, here so that settings are checked without importing torch (the command line checks
# them before its heavy imports); tests/test_config.py pins them to the registries they name.
ANNOTATOR_NAMES = ("canny", "depth_dpt", "midas", "zoe", "lineart", "softedge")  # annotators.ANNOTATORS
SCHEDULER_NAMES = ("euler", "euler_ancestral", "ddim", "dpmpp_2m", "unipc", "dpmpp_2s_ancestral")  # SCHEDULERS


# The settings that take one of a few names. Their values are these strings (in the sidecar and YAML alike); the
# schema refuses any other name.
class ResizeMode(StrEnum):  # video.resize_mode
    crop = "crop"
    pad = "pad"


class Prior(StrEnum):  # sampling.prior
    auto = "auto"
    none = "none"
    keyframe = "keyframe"
    video = "video"


class Hierarchical(StrEnum):  # windows.hierarchical; YAML's true and false are read as these names
    auto = "auto"
    true = "true"
    false = "false"


class WindowNoise(StrEnum):  # windows.noise
    independent = "independent"
    repeat = "repeat"


class ModelDtype(StrEnum):  # model.dtype; the short names are aliases of the long ones
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    fp32 = "float32"
    fp16 = "float16"
    bf16 = "bfloat16"


# Each dtype name the pipeline accepts and the torch dtype it means (pipelines.loading.DTYPES), besides "auto".
DTYPE_NAMES = {name: member.value for name, member in ModelDtype.__members__.items() if member != ModelDtype.auto}


def default_overlap(length: int) -> int:
    """Frames shared by neighbouring windows when not given: about a quarter of the window."""
    return length // 4


def check_window(length: int | None, overlap: int | None) -> None:
    """Refuse a window length below 1 or an overlap that is negative or not smaller than the window."""
    if length is not None and length < 1:
        raise InvalidInputError(f"the window length must be at least 1 frame, got {length}")
    if overlap is not None and overlap < 0:
        raise InvalidInputError(f"the window overlap must be 0 or more frames, got {overlap}")
    if length is not None and overlap is not None and overlap >= length:
        raise InvalidInputError(
            f"the window overlap ({overlap}) must be smaller than the window ({length}): e.g. {default_overlap(length)}"
        )



def check_annotator_names(config: Any) -> None:
    """Raise a one-line `UserError` for a structure annotator name that does not exist, before any model loads."""
    known = {"depth", *ANNOTATOR_NAMES}
    for name in config.structure.annotators:
        if name not in known:
            choices = ", ".join(sorted(ANNOTATOR_NAMES))
            raise UserError(
                f"unknown annotator {name!r} in structure.annotators: choose depth (the model's own depth "
                f"estimator) or one of {choices}"
            )


def check_scheduler_name(config: Any) -> None:
    """Raise a one-line `UserError` for an unknown scheduler, before any model loads (it is otherwise first looked
    up when the pipeline is built)."""
    if config.sampling.scheduler not in SCHEDULER_NAMES:
        raise UserError(f"unknown scheduler {config.sampling.scheduler!r} in sampling.scheduler: choose one of "
                        f"{', '.join(SCHEDULER_NAMES)}")


def reject_resolvers(layer: Any, source: str) -> None:
    """Raise a one-line `UserError` when a user layer calls an OmegaConf resolver such as `${oc.env:VAR}`.

    Settings are data: a shared config file must not copy environment variables (tokens, paths) into the edit and
    its sidecar, so resolvers are refused rather than resolved. References to other settings (`${video.fps}`)
    stay allowed.

    Args:
        layer: One layer as plain containers, unresolved (`OmegaConf.to_container(layer, resolve=False)`).
        source (`str`): Where the layer came from, for the message.
    """
    for key, value in _leaves(layer):
        match = _RESOLVER_CALL.search(value) if isinstance(value, str) else None
        if match:
            raise UserError(
                f"{source}: `{key}` calls the resolver `{match.group(1)}` ({value}); settings cannot read the "
                "environment or run resolvers: write the value itself"
            )


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _leaves(config: Any, prefix: str = ""):
    """(dotted key, value) of every field of nested dataclasses, lists indexed (`structure.scales.0`)."""
    if is_dataclass(config):
        for f in fields(config):
            yield from _leaves(getattr(config, f.name), f"{prefix}{f.name}.")
    elif isinstance(config, (list, tuple)):
        for i, item in enumerate(config):
            yield from _leaves(item, f"{prefix}{i}.")
    elif isinstance(config, dict):
        for name, item in config.items():
            yield from _leaves(item, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), config
