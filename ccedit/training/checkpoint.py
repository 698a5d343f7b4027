"""Checkpoints of a training run: written as data only, verified before use, restored exactly.

`checkpoints/step-NNNNNN/` holds the trained parts as model sub-folders (`temporal/`, `appearance/`: config and
safetensors), the optimiser, LR schedule, EMA and gradient-scaler states and each process's random states
(`state_files` format: safetensors with JSON metadata, nothing that runs code when read) and, written last,
`trainer_state.json`: the step, the trained roles, whether EMA is kept, and the size and SHA-256 of every file.
Files that are not listed there (e.g. pickles someone put in the folder) are never read.

A checkpoint is intact when its `trainer_state.json` names its own step and every listed file matches; `--resume`
takes the newest intact one and warns about each newer damaged one. An intact checkpoint that does not fit the
settings (other roles, EMA switched, a step beyond `train.max_steps`) is refused: falling back would silently
discard the newest work.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LOAD_ADVICE, UserError, first_line, is_out_of_memory, out_of_memory
from ..io import atomic_path
from ..io.fingerprint import file_fingerprint
from ..models.trident import trained_parts
from .state_files import DamagedStateError, read_state, write_state

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
FORMAT = 2  # 1: accelerate's pickled states, which are not read
OPTIMIZER, LR_SCHEDULER, EMA, SCALER = "optimizer", "lr_scheduler", "ema", "scaler"
PART_WEIGHTS = "diffusion_pytorch_model.safetensors"
_STEP_NAME = re.compile(r"step-(\d+)")
_MAX_STATE_FILE_BYTES = 1 << 20  # a trainer_state.json lists a few dozen files


@dataclass
class TrainingState:
    """What a checkpoint saves and restores, besides the data position (which follows from the step)."""

    accelerator: object
    trident: torch.nn.Module  # as prepared by accelerate
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema: object | None  # diffusers' EMAModel
    roles: list[str]

    @property
    def scaler(self):
        return getattr(self.accelerator, "scaler", None)


def checkpoint_folder(output: Path, step: int) -> Path:
    return output / CHECKPOINTS / f"step-{step:06d}"


def random_states_name(process_index: int) -> str:
    return f"random_states_{process_index}.safetensors"


def save_checkpoint(state: TrainingState, output: Path, step: int, keep: int | None) -> None:
    """Write `checkpoints/step-NNNNNN/` atomically: every process writes into one temporary folder, which the main
    process renames once `trainer_state.json` lists every file."""
    from accelerate.utils import broadcast_object_list

    accelerator = state.accelerator
    if accelerator.is_main_process:
        with atomic_path(checkpoint_folder(output, step), is_dir=True) as tmp:
            broadcast_object_list([str(tmp)])
            _write_states(state, tmp)
            accelerator.wait_for_everyone()  # every process's random states are written
            _write_state_file(state, tmp, step)
        if keep:
            for old in sorted((output / CHECKPOINTS).glob("step-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    else:
        shared = broadcast_object_list([None])
        _write_states(state, Path(shared[0]))
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()


def _write_states(state: TrainingState, folder: Path) -> None:
    accelerator = state.accelerator
    write_state(folder / random_states_name(accelerator.process_index), _random_states())
    if not accelerator.is_main_process:
        return  # the rest is the same in every process
    accelerator.unwrap_model(state.trident).save_trained(folder, state.roles)
    write_state(folder / f"{OPTIMIZER}.safetensors", state.optimizer.state_dict())
    write_state(folder / f"{LR_SCHEDULER}.safetensors", state.lr_scheduler.state_dict())
    if state.ema is not None:
        write_state(folder / f"{EMA}.safetensors", state.ema.state_dict())
    if state.scaler is not None:
        write_state(folder / f"{SCALER}.safetensors", state.scaler.state_dict())


def _write_state_file(state: TrainingState, folder: Path, step: int) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    record = {
        "format": FORMAT,
        "step": step,
        "roles": state.roles,
        "use_ema": state.ema is not None,
        "num_processes": state.accelerator.num_processes,
        "files": {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_fingerprint(p)}
                  for p in files},
    }
    (folder / STATE_FILE).write_text(json.dumps(record, indent=1) + "\n")


def required_files(record: dict) -> list[str]:
    """The files a checkpoint of this record cannot be resumed without."""
    files = [f"{part}/{PART_WEIGHTS}" for part in trained_parts(record["roles"])]
    files += [f"{OPTIMIZER}.safetensors", f"{LR_SCHEDULER}.safetensors", random_states_name(0)]
    return files + ([f"{EMA}.safetensors"] if record["use_ema"] else [])


def checkpoint_damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None when it is intact (its files are as it recorded them)."""
    state_file = folder / STATE_FILE
    try:
        if state_file.is_symlink() or not state_file.is_file():
            return f"{STATE_FILE} is missing (an interrupted or foreign checkpoint)"
        if state_file.stat().st_size > _MAX_STATE_FILE_BYTES:
            return f"{STATE_FILE} is too large to be one"
        record = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        return f"{STATE_FILE} is unreadable ({type(error).__name__})"
    problem = _record_problem(record, folder.name)
    if problem:
        return f"{STATE_FILE} {problem}"
    for name in required_files(record):
        if name not in record["files"]:
            return f"{name} is missing"
    for name, expected in record["files"].items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected.get("bytes"):
            return f"{name} has {path.stat().st_size} bytes, not the {expected.get('bytes')} written (truncated?)"
        if file_fingerprint(path) != expected.get("sha256"):
            return f"{name} has changed since it was written (damaged)"
    return None


def _record_problem(record, folder_name: str) -> str | None:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "is not a checkpoint record of this ccedit version"
    step, roles, files = record.get("step"), record.get("roles"), record.get("files")
    match = _STEP_NAME.fullmatch(folder_name)
    if not isinstance(step, int) or isinstance(step, bool) or match is None or int(match.group(1)) != step:
        return f"says step {step!r}, which is not the folder's step"
    if not (isinstance(roles, list) and all(isinstance(r, str) for r in roles)):
        return "has no valid roles"
    if not isinstance(record.get("use_ema"), bool):
        return "has no valid use_ema"
    if not isinstance(files, dict) or not all(_is_inside(name) and isinstance(v, dict) for name, v in files.items()):
        return "lists files outside its folder"
    return None


def _is_inside(name) -> bool:
    parts = Path(name).parts if isinstance(name, str) else ()
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def select_checkpoint(output: Path) -> tuple[Path, dict]:
    """The newest intact checkpoint of a run and its record; each newer damaged one is named in a warning.

    Raises a one-line `UserError` when there is none, naming the newest checkpoint and what is wrong with it.
    """
    folders = sorted((p for p in (output / CHECKPOINTS).glob("step-*") if p.is_dir()), key=lambda p: p.name)
    damaged: list[tuple[Path, str]] = []
    for folder in reversed(folders):
        problem = checkpoint_damage(folder)
        if problem is None:
            for bad, reason in damaged:
                logger.warning("checkpoint %s is damaged (%s): resuming from %s instead", bad, reason, folder.name)
            return folder, json.loads((folder / STATE_FILE).read_text())
        damaged.append((folder, problem))
    if damaged:
        newest, reason = damaged[0]
        others = f" (and {len(damaged) - 1} older checkpoints are damaged too)" if len(damaged) > 1 else ""
        raise UserError(f"--resume: no usable checkpoint in {output / CHECKPOINTS}: in {newest}, {reason}{others}; "
                        "pass --overwrite instead of --resume to start the run over")
    raise UserError(f"--resume: no checkpoint in {output / CHECKPOINTS}; run without --resume to start")


def check_fits(folder: Path, record: dict, roles: list[str], use_ema: bool, max_steps: int) -> None:
    """Refuse, in one line, an intact checkpoint that these settings cannot continue."""
    if sorted(record["roles"]) != sorted(roles):
        raise UserError(f"checkpoint {folder} trained {', '.join(record['roles'])}, but model.trainable is "
                        f"{', '.join(roles)}: resume with the run's roles or start a new run")
    if record["use_ema"] != use_ema:
        raise UserError(f"checkpoint {folder} was written with train.use_ema={str(record['use_ema']).lower()}: "
                        "resume with the same setting")
    if record["step"] > max_steps:
        raise UserError(f"checkpoint {folder} is at step {record['step']}, beyond train.max_steps={max_steps}: "
                        f"set train.max_steps to at least {record['step']} to continue the run")


def load_checkpoint(state: TrainingState, folder: Path) -> None:
    """Restore the trained parts, optimiser, LR schedule, EMA and gradient scaler of an intact checkpoint.

    Random states are restored apart (`restore_random_states`), last, after everything that draws from them.
    A checkpoint whose states do not fit the networks built from the settings is refused in one line.
    """
    trident = state.accelerator.unwrap_model(state.trident)
    try:
        with torch.no_grad():
            trident.load_trained(folder, state.roles)
        state.optimizer.load_state_dict(read_state(folder / f"{OPTIMIZER}.safetensors"))
        state.lr_scheduler.load_state_dict(read_state(folder / f"{LR_SCHEDULER}.safetensors"))
        if state.ema is not None:
            state.ema.load_state_dict(read_state(folder / f"{EMA}.safetensors"))
            state.ema.to(state.accelerator.device)
        if state.scaler is not None and (folder / f"{SCALER}.safetensors").is_file():
            state.scaler.load_state_dict(read_state(folder / f"{SCALER}.safetensors"))
    except (DamagedStateError, RuntimeError, ValueError, KeyError, TypeError, OSError, MemoryError) as error:
        if is_out_of_memory(error):  # the checkpoint is fine; the machine is short of memory
            raise out_of_memory(f"loading checkpoint {folder}", LOAD_ADVICE, error) from None
        reason = first_line(error, limit=200)
        raise UserError(f"checkpoint {folder} does not fit the networks of these settings ({reason}): resume with "
                        "the run's model settings") from error


def restore_random_states(folder: Path, process_index: int) -> None:
    """Set Python's, numpy's and torch's global generators to where they were when the checkpoint was written."""
    path = folder / random_states_name(process_index)
    if not path.is_file():
        logger.warning("checkpoint %s has no random states for process %d (the run had fewer processes): its random "
                       "draws start from the seed", folder, process_index)
        return
    try:
        states = read_state(path)
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.set_rng_state(states["torch"])
        if torch.cuda.is_available() and "cuda" in states and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
    except (DamagedStateError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"checkpoint {folder}: {path.name} holds no valid random states ({error}); "
                        "pass --overwrite instead of --resume to start the run over") from error


def _random_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states
