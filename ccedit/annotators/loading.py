"""Finding annotator weights in a local folder or the Hugging Face cache, with one-line errors when they are missing."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ccedit.errors import weights_load_error
# Hub and folder resolution is shared with the pipelines, metrics and convert; annotators use it through here.
from ccedit.hub import (  # noqa: F401 - re-exported
    HUB_PROBE_TIMEOUT,
    LOCAL_FOLDER_ADVICE,
    hub_revision,
    is_hub_reachable,
    is_local_reference,
    is_offline,
    missing_hub_model,
    missing_local_model,
    resolve_files,
)

logger = logging.getLogger(__name__)

# The hub repository that holds the controlnet-aux detector weights.
DEFAULT_ANNOTATOR_REPO = "lllyasviel/Annotators"


def files_fingerprint(paths: list[Path]) -> list[list[Any]]:
    """Name, size and mtime of each file, so a cache key changes when weights are replaced in place."""
    fingerprint = []
    for path in sorted(paths):
        stat = path.stat()
        fingerprint.append([path.name, stat.st_size, stat.st_mtime_ns])
    return fingerprint


def folder_fingerprint(folder: str | os.PathLike) -> list[list[Any]]:
    """`files_fingerprint` of the regular files at the top of a model folder (config, weights, processor)."""
    return files_fingerprint([p for p in Path(folder).expanduser().iterdir() if p.is_file()])


def module_identity(module: torch.nn.Module) -> str:
    """A best-effort name for a model passed in already loaded (its `name_or_path`, else its class)."""
    config = getattr(module, "config", None)
    name_or_path = getattr(module, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return name_or_path or f"<{type(module).__name__}>"


@contextlib.contextmanager
def weights_only_loading(what: str, paths: list[Path]) -> Iterator[None]:
    """Inside this block every `torch.load` is weights-only, whatever its caller asks; refused or damaged files
    become one-line errors naming them.

    controlnet-aux builds its detectors with plain `torch.load(path)`, which unpickles anything (and so runs code
    from the file) on torch versions whose default is not weights-only, or wherever a caller passes
    `weights_only=False`. Its loaders cannot be told otherwise, so `torch.load` itself is wrapped while they run.

    Args:
        what (`str`): What the files are ("lineart weights"), for errors.
        paths (`list[Path]`): The files being loaded, for errors.
    """
    original = torch.load

    @functools.wraps(original)
    def load_weights_only(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load_weights_only
    try:
        yield
    except Exception as error:
        failure = weights_load_error(what, paths[0] if len(paths) == 1 else paths[0].parent, error)
        if failure is None:
            raise
        raise failure from None
    finally:
        torch.load = original
