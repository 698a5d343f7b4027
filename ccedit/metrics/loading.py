"""Metric models from a local folder, a hub id or the built-in `tiny` models, with one-line errors when missing.

Resolution happens when a metric is built (cheap: a folder or cache look-up), loading on first use, so a run with a
misspelt model fails before any editing starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import transformers

from ccedit.hub import hub_revision, is_hub_reachable, is_local_reference, is_offline
from ccedit.errors import ModelNotFoundError, UserError
from ccedit.metrics.raft_folder import RAFT_ARCHITECTURES, RAFT_CONFIG, RAFT_WEIGHTS

TINY = "tiny"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, metric: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"metric {metric!r}: unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_pretrained(
    reference: str, *, metric: str, option: str, what: str, files: tuple[str, ...] = ("config.json",)
) -> str:
    """Check that `reference` (a folder, a hub id or `tiny`) can be loaded; return it unchanged.

    Where no download can be tried (`HF_HUB_OFFLINE=1`, or a hub that does not answer: `hub.is_hub_reachable`) a
    hub id that is not in the local cache fails here at once, naming the metric's option to set, instead of failing
    later inside `from_pretrained` after its retries. `files`: any one of them marks the folder.
    """
    if reference == TINY:
        return reference
    if is_local_reference(reference):
        folder = Path(reference).expanduser()
        if not any((folder / file).is_file() for file in files):
            state = f"has no {' or '.join(files)}" if folder.is_dir() else "does not exist"
            raise ModelNotFoundError(
                f"metric {metric!r}: {what} folder '{reference}' {state}: set the metric's `{option}` to a folder "
                "written by save_pretrained or to a hub id"
            )
        return reference
    if not any(isinstance(_cached_file(reference, file), str) for file in files) and not is_hub_reachable():
        why = "HF_HUB_OFFLINE is set" if is_offline() else "the hub does not answer"
        raise ModelNotFoundError(
            f"metric {metric!r}: {what} '{reference}' is not in the local cache and {why}: "
            f"download it with `hf download {reference}` or set the metric's `{option}` to a local folder"
        )
    return reference


def _cached_file(reference: str, file: str) -> str | object | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        return try_to_load_from_cache(reference, file)
    except (OSError, ValueError):
        return None


def pretrained_record(reference: str) -> dict:
    """Where a model came from, for results files: the reference and, for a cached hub id, its commit."""
    record = {"model": reference}
    if reference != TINY and not is_local_reference(reference):
        record["revision"] = hub_revision(reference)
    return record


def load_pretrained(load, reference: str, *, metric: str, option: str, what: str, **kwargs):
    """`load(reference, **kwargs)` (a `from_pretrained`), with a missing model turned into one line naming `option`."""
    try:
        return load(reference, local_files_only=not is_hub_reachable(), **kwargs)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(
            f"metric {metric!r}: cannot load the {what} '{reference}' ({reason}): set the metric's `{option}` to a "
            "local folder or a reachable hub id"
        ) from None


def load_clip_processor(reference: str, *, metric: str, option: str):
    """A `CLIPProcessor` whose image half is transformers' PIL implementation.

    The reference scores resized frames with PIL's bicubic filter (OpenAI `clip` and the 2023 transformers
    processor); transformers 5 defaults to a torchvision backend whose antialiasing differs slightly, so the PIL
    backend is asked for explicitly.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPProcessor

    backend = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    image_processor = load_pretrained(
        AutoImageProcessor.from_pretrained, reference, metric=metric, option=option, what="image processor", **backend
    )
    tokenizer = load_pretrained(
        AutoTokenizer.from_pretrained, reference, metric=metric, option=option, what="tokenizer"
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


# Optical flow ----------------------------------------------------------------------------------------------------



def check_raft(reference: str, *, metric: str, option: str) -> str:
    """Check a flow model reference: `raft_large`/`raft_small` (torchvision's weights), `tiny`, or a saved folder."""
    if reference == TINY:
        return reference
    if reference in RAFT_ARCHITECTURES:
        path = _torchvision_raft_file(reference)
        if is_offline() and not path.is_file():
            raise ModelNotFoundError(
                f"metric {metric!r}: torchvision's {reference} weights are not in {path.parent} and HF_HUB_OFFLINE is "
                f"set: run once online, or set the metric's `{option}` to a folder written by `save_raft`"
            )
        return reference
    folder = Path(reference).expanduser()
    if not (folder / RAFT_CONFIG).is_file() or not (folder / RAFT_WEIGHTS).is_file():
        raise ModelNotFoundError(
            f"metric {metric!r}: flow model {reference!r} is neither {' nor '.join(RAFT_ARCHITECTURES)} nor a folder "
            f"with {RAFT_CONFIG} and {RAFT_WEIGHTS}: set the metric's `{option}` to one of those"
        )
    return reference


def _raft_weights(architecture: str):
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    return {"raft_large": Raft_Large_Weights.DEFAULT, "raft_small": Raft_Small_Weights.DEFAULT}[architecture]


def _torchvision_raft_file(architecture: str) -> Path:
    """Where torch.hub keeps torchvision's download of these weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_raft_weights(architecture).url)


def load_raft(reference: str, *, metric: str, option: str) -> torch.nn.Module:
    """torchvision's RAFT: with its released weights, the seeded tiny model, or a folder written by `save_raft`."""
    from torchvision.models import optical_flow

    if reference == TINY:
        from ccedit.metrics.tiny import tiny_raft

        return tiny_raft()
    if reference in RAFT_ARCHITECTURES:
        try:
            return getattr(optical_flow, reference)(weights=_raft_weights(reference), progress=False)
        except OSError as error:  # urllib's URLError is an OSError: no connection
            raise ModelNotFoundError(
                f"metric {metric!r}: cannot download torchvision's {reference} weights ({error}): run once online, "
                f"or set the metric's `{option}` to a folder written by `save_raft`"
            ) from None
    from safetensors.torch import load_file

    folder = Path(reference).expanduser()
    config = json.loads((folder / RAFT_CONFIG).read_text())
    architecture = config.get("architecture")
    if architecture not in RAFT_ARCHITECTURES:
        raise ModelNotFoundError(
            f"metric {metric!r}: {folder / RAFT_CONFIG} names architecture {architecture!r}: expected one of "
            f"{', '.join(RAFT_ARCHITECTURES)}"
        )
    model = getattr(optical_flow, architecture)(weights=None)
    model.load_state_dict(load_file(folder / RAFT_WEIGHTS))  # strict: a wrong file fails with the offending keys
    return model
