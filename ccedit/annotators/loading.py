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

from ccedit.errors import ModelNotFoundError, is_unreadable_weights, unreadable_weights

logger = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}

# The hub repository that holds the controlnet-aux detector weights.
DEFAULT_ANNOTATOR_REPO = "lllyasviel/Annotators"


def is_offline() -> bool:
    """Whether the user asked for no hub traffic (`HF_HUB_OFFLINE`); read at call time, never set by ccedit."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


# Seconds the hub gets to answer at all before it counts as unreachable: an offline machine must fail at once, not
# after huggingface_hub's retries (about half a minute per file, every attempt logged).
HUB_PROBE_TIMEOUT = 3.0
_hub_answers: dict[str, bool] = {}  # endpoint -> whether it answered, asked once per process
# The advice every "not found" message ends with; callers that know the option for a folder name it after this.
LOCAL_FOLDER_ADVICE = "pass a local folder"


def is_hub_reachable() -> bool:
    """Whether hub downloads can be tried: not when `HF_HUB_OFFLINE` is set, nor when the hub's endpoint gives no
    HTTP answer (any status counts) within `HUB_PROBE_TIMEOUT` seconds. Asked once per endpoint and process; when
    False, loads use only the local cache."""
    if is_offline():
        return False
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT
    if endpoint not in _hub_answers:
        try:
            get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT)
            _hub_answers[endpoint] = True
        except Exception as error:  # no route, no name resolution, refused, timed out: all mean "offline"
            logger.info("the hub at %s does not answer (%s): using only local files", endpoint, error)
            _hub_answers[endpoint] = False
    return _hub_answers[endpoint]


def is_local_reference(model: str | os.PathLike) -> bool:
    """Whether `model` names a local folder rather than a hub id.

    An existing folder is local. So is anything that cannot be a hub id (`namespace/name` at most): absolute or
    relative paths (`/x`, `./x`, `~/x`) and strings with more than one slash, so that a mistyped folder gets a
    "folder does not exist" error instead of a confusing hub error.
    """
    text = os.fspath(model)
    if os.path.isdir(text):
        return True
    return (
        os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)
    )


def missing_hub_model(what: str, model: str, files: str = "", reason: Exception | None = None) -> ModelNotFoundError:
    """The one-line error for a hub id that is neither in the local cache nor fetchable."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    if is_offline():
        where = "not found locally and HF_HUB_OFFLINE is set"
    elif not is_hub_reachable():
        where = "not found locally and the hub does not answer"
    elif isinstance(reason, (RepositoryNotFoundError, EntryNotFoundError)) and not isinstance(
        reason, LocalEntryNotFoundError
    ):
        where = f"was not found on the hub ({type(reason).__name__})"
    else:
        where = "not found locally and the hub is unreachable"
    command = f"hf download {model}{' ' + files if files else ''}"
    return ModelNotFoundError(f"{what} '{model}' {where}: download it with `{command}` or {LOCAL_FOLDER_ADVICE}")


def missing_local_model(what: str, folder: str, needed: str, hint: str) -> ModelNotFoundError:
    """The one-line error for a local folder that does not exist or lacks the weight files."""
    if not os.path.isdir(folder):
        return ModelNotFoundError(f"{what} folder '{folder}' does not exist: {hint}")
    return ModelNotFoundError(f"{what} folder '{folder}' has no {needed}: {hint}")


def resolve_files(model: str | os.PathLike, filenames: list[str], *, what: str, default_repo: str) -> list[Path]:
    """Local paths of `filenames` from a folder or a hub repository (downloaded into the HF cache if allowed).

    Args:
        model (`str` or `os.PathLike`): A local folder or a hub id.
        filenames (`list[str]`): Files to find, relative to the folder or repository root.
        what (`str`): What the files are, for error messages ("MiDaS depth weights").
        default_repo (`str`): The hub id to suggest when a local folder lacks the files.

    Raises:
        `ModelNotFoundError`: when a file is missing locally and cannot be fetched.
    """
    text = os.fspath(model)
    if is_local_reference(text):
        paths = [Path(text).expanduser() / name for name in filenames]
        missing = [str(p.relative_to(Path(text).expanduser())) for p in paths if not p.is_file()]
        if missing:
            needed = ", ".join(missing)
            hint = (
                f"download them with `hf download {default_repo} {' '.join(missing)} --local-dir {text}` "
                f"or pass the hub id '{default_repo}'"
            )
            raise missing_local_model(what, text, needed, hint)
        return paths

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    paths = []
    for name in filenames:
        try:
            paths.append(Path(hf_hub_download(text, name, local_files_only=not is_hub_reachable())))
        except (OSError, ValueError, EntryNotFoundError) as error:
            # OSError covers a missing cache entry, a missing repository and no connection; ValueError a malformed id.
            raise missing_hub_model(f"{what} ({', '.join(filenames)}) of", text, " ".join(filenames), error) from error
    return paths


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


def hub_revision(model: str) -> str | None:
    """The commit of the cached snapshot `model` was loaded from, if it can be found without network access."""
    try:
        from huggingface_hub import try_to_load_from_cache

        config_path = try_to_load_from_cache(model, "config.json")
    except (OSError, ValueError):
        return None
    if isinstance(config_path, str):
        # The cache stores files under snapshots/<commit>/...
        return Path(config_path).parent.name
    return None


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
        if not is_unreadable_weights(error):
            raise
        location = paths[0] if len(paths) == 1 else paths[0].parent
        raise unreadable_weights(what, location, error) from None
    finally:
        torch.load = original
