"""Where a model lives: a local folder or a hub id, resolved with one-line errors when it cannot be found.

One leaf module shared by the pipelines, annotators, metrics and convert, so none of them imports another for it.
It imports nothing from ccedit but `errors`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelNotFoundError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

logger = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}


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


def _is_hub_id(model: str) -> bool:
    """Whether `model` has a hub id's shape (`owner/name`) and is not a path."""
    return not model.startswith((".", "/", "~")) and model.count("/") == 1 and not Path(model).expanduser().exists()


def cached_model_folder(model: str) -> Path | None:
    """A local folder for `model` with no network traffic: the folder itself, or the cached snapshot of a hub id;
    None when there is neither (for what only needs to read a model's configs, and must not fetch its weights)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if not _is_hub_id(model):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the cache, or a cache entry without a snapshot: nothing to read
        return None


def names_local_folder(model: str) -> bool:
    """Whether `model` is meant as a local folder: it exists, cannot be a hub id (`is_local_reference`), or is an
    `owner/name` whose first part is a folder here (`models/ccedit-tvi2v` beside a `models/` folder)."""
    return is_local_reference(model) or (model.count("/") == 1 and Path(model.split("/")[0]).expanduser().is_dir())


def resolve_model_folder(model: str, what: str = "model", *, hint: str = "pass a local folder") -> Path:
    """A local folder for `model`: the folder itself, or the snapshot of a hub id (downloaded once, then cached).

    Resolving first gives one clear error at once, where `from_pretrained` on an unreachable hub would retry for
    half a minute and then report a missing `config.json`. A reference meant as a folder (`names_local_folder`) that
    does not exist is said to be missing, with `hint` (how to make or choose one); an `owner/name` that is neither a
    folder nor a hub model available here gets `hint` and, unless the hub said it has no such model, the download.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if not _is_hub_id(model) or names_local_folder(model):
        raise ModelNotFoundError(f"{what} folder {model} does not exist: {hint}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=not is_hub_reachable()))
    except Exception as e:  # offline, unknown repo, no access: the user needs the same advice
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        not_on_hub = isinstance(e, RepositoryNotFoundError) and not isinstance(e, LocalEntryNotFoundError)
        if not is_hub_reachable():
            reason = "not in the hub cache; HF_HUB_OFFLINE is set" if is_offline() else (
                "not in the hub cache; the hub does not answer")
        download = "" if not_on_hub else f", or for a hub id run `hf download {model}` once while online"
        raise ModelNotFoundError(
            f"{what} {model!r} is neither a folder here nor a hub model available here ({reason}): {hint}{download}"
        ) from None


TOKENIZER_FILES = ("vocab.json", "tokenizer.json")


def load_tokenizer(reference: str, what: str = "tokenizer") -> CLIPTokenizer:
    """A CLIP tokenizer from a folder (itself or its `tokenizer/`) or a hub id's `tokenizer/`.

    The files are resolved first, because `from_pretrained` of an unreachable hub id returns an empty
    tokenizer instead of failing.
    """
    from transformers import CLIPTokenizer

    folder = Path(reference).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(reference, allow_patterns=["tokenizer/*"],
                                            local_files_only=not is_hub_reachable())) / "tokenizer"
        except Exception as e:  # offline, unknown repo, no access: all mean the same to the user
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelNotFoundError(
                f"cannot get the {what} {reference!r} ({reason}): pass a local SD-1.5 folder or tokenizer folder "
                "with model.tokenizer=DIR, or a hub id while online"
            ) from None
    elif (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFoundError(f"{folder} holds no tokenizer ({' or '.join(TOKENIZER_FILES)} missing)")
    return CLIPTokenizer.from_pretrained(str(folder), trust_remote_code=False)
