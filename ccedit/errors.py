"""Errors that reach the user as one line, without a traceback."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: the CLI prints `str(error)` on one line and exits with code 2.

    The message says what is wrong and, where known, what to do about it.
    """


class ModelNotFoundError(UserError):
    """A model folder, file or hub id could not be found or reached."""


class InvalidInputError(UserError, ValueError):
    """An argument of a public call is out of its range or shape; the message names it and what it expects."""


# Files a model component may keep its weights in: safetensors, or a pickle (torch.save) under its usual names.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def first_line(error: BaseException, limit: int = 160) -> str:
    """A library error's own words for a one-line message: its first line (at most `limit` characters), or the
    error's type when it says nothing."""
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__


def unreadable_weights(what: str, location: str | os.PathLike, error: BaseException) -> UserError:
    """The one-line error for weights that exist but cannot be loaded: damaged, not weights, or a pickle that
    would run code (which weights-only loading refuses). Names the component and its weight file(s).

    Args:
        what (`str`): The component ("text encoder").
        location (`str` or `os.PathLike`): The weight file, or the component's folder (its weight files are named).
        error (`BaseException`): What the loader raised.
    """
    is_pickle_refused = isinstance(error, pickle.UnpicklingError)
    suffixes = PICKLE_SUFFIXES if is_pickle_refused else WEIGHT_SUFFIXES
    location = Path(location)
    if location.is_dir():
        files = sorted(p.name for p in location.iterdir() if p.suffix in suffixes)
        named = f"{location / files[0]}" if len(files) == 1 else f"the weights in {location} ({', '.join(files) or 'none'})"
    else:
        named = str(location)
    if is_pickle_refused:
        reason = "not a plain pickle of tensors: damaged, or it would run code when loaded, which is refused"
    else:
        reason = first_line(error)
    return UserError(f"cannot load the {what}: {named} is unreadable ({reason}); replace it with a safetensors file")


def is_unreadable_weights(error: BaseException) -> bool:
    """Whether a loader's exception means its weight file is damaged, not weights, or a refused pickle.

    Out-of-memory and device errors are `RuntimeError`s too, but say nothing about the file: they are not matched.
    """
    from safetensors import SafetensorError

    if is_out_of_memory(error):  # a safetensors or pickle error may be an allocation that failed
        return False
    if isinstance(error, (pickle.UnpicklingError, SafetensorError, EOFError)):
        return True
    # torch reports a damaged archive or mismatched tensors as a plain RuntimeError; its subclasses (out of memory,
    # not implemented) are about the machine or the code.
    return type(error) is RuntimeError and "cuda" not in str(error).lower()


# How allocators word it: Python/numpy, C++ (decord), ffmpeg's and the OS's ENOMEM (safetensors' mmap), OpenCV,
# torch on the GPU ("CUDA out of memory") and on the CPU ("DefaultCPUAllocator: not enough memory").
_OUT_OF_MEMORY_WORDS = ("out of memory", "cannot allocate memory", "bad_alloc", "unable to allocate", "failed to allocate",
                        "not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception reports that memory ran out, whatever library raised it."""
    import errno

    text = str(error).lower()
    return (isinstance(error, MemoryError) or getattr(error, "errno", None) == errno.ENOMEM
            or any(words in text for words in _OUT_OF_MEMORY_WORDS))


def out_of_memory(doing: str, advice: str, error: BaseException) -> UserError:
    """The one-line error for memory that ran out while `doing` something ("loading the VAE from DIR"): which memory
    (the accelerator's or the computer's), the library's words, and `advice`, what reduces the need.

    Out of memory is never a damaged file: every reader checks `is_out_of_memory` before blaming its input.
    """
    reason = first_line(error)
    memory = "the GPU's memory" if "cuda" in reason.lower() or type(error).__name__ == "OutOfMemoryError" else "memory"
    return UserError(f"out of {memory} {doing} ({reason}): {advice}")


# What reduces the memory a model's weights need while they load.
LOAD_ADVICE = ("close other programs, use model.dtype=float16 on a GPU (model.cpu_offload=true keeps idle parts on the "
               "CPU), or a machine with more memory")


def weights_load_error(what: str, location: str | os.PathLike, error: BaseException) -> UserError | None:
    """The one-line error for weights that failed to load, or None when the failure is not the user's to fix (the
    caller re-raises): out of memory first (`out_of_memory`), then a damaged or refused file (`unreadable_weights`).
    """
    if is_out_of_memory(error):
        return out_of_memory(f"loading the {what} from {location}", LOAD_ADVICE, error)
    if is_unreadable_weights(error):
        return unreadable_weights(what, location, error)
    return None
