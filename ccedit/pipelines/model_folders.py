"""Where a model's parts come from: a model reference resolved to a folder with ccedit's advice, the layout of a
converted model folder, and one component loaded with one-line errors. Shared by the model loaders, personalised
bases and the evaluation baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import hub
from ..errors import ModelNotFoundError, weights_load_error

# The folder layout `ccedit convert` writes (diffusers-style, one sub-folder per component).
REQUIRED_SUBFOLDERS = ("unet", "temporal", "controlnet", "vae", "text_encoder")
HOW_TO_GET = "convert a released CCEdit checkpoint with `ccedit convert CKPT --out DIR` and set model.path=DIR"


def how_to_make(model: str, named: Sequence[str] = ()) -> str:
    """The advice for a ccedit model folder `model` that is missing: the command that makes it under that name
    (and, for a bare name, the models known by name, `named`)."""
    others = f" (the named models are {', '.join(named)})" if named and "/" not in model else ""
    return f"make it from a released CCEdit checkpoint with `ccedit convert CKPT --out {model}`{others}"


def resolve_model_folder(model: str, what: str = "model", option: str = "model.path=DIR", *, hint: str = "") -> Path:
    """`hub.resolve_model_folder` with ccedit's advice: `hint`, else to pass a local folder with `option` (only the
    local cache is used when the hub does not answer)."""
    return hub.resolve_model_folder(model, what, hint=hint or f"pass a local folder with {option}")


def check_model_folder(model: str, folder: Path) -> Path:
    """`folder` if it has the layout `ccedit convert` writes, else the one-line refusal naming what is missing."""
    missing = [s for s in REQUIRED_SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        # Say which folder was found: a bare name such as `ccedit` may be a folder of the current one (the package's
        # own source folder, in a clone of the repository).
        what = "a Python package" if (folder / "__init__.py").is_file() else "a folder"
        raise ModelNotFoundError(
            f"{model} is {what} here ({folder.resolve()}), not a ccedit model folder (no "
            f"{', '.join(m + '/' for m in missing)}): {HOW_TO_GET}"
        )
    return folder


def load_component(cls, path: str, subfolder: str | None, what: str, **kwargs):
    """`cls.from_pretrained(path, subfolder=...)`; a failure is one line naming the component (`what`) and the
    folder: unreadable weights, out of memory, or what is missing."""
    try:
        if subfolder is None:
            return cls.from_pretrained(path, **kwargs)
        return cls.from_pretrained(path, subfolder=subfolder, **kwargs)
    except Exception as e:
        failure = weights_load_error(what, Path(path) / (subfolder or ""), e)
        if failure is not None:
            raise failure from None
        if not isinstance(e, (OSError, ValueError)):
            raise
        where = f"{path}/{subfolder}" if subfolder else path
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotFoundError(f"cannot load the {what} from {where} ({reason}); {HOW_TO_GET}") from None
