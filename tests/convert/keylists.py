"""Helpers for the converter tests: the full-size key listings of the released checkpoints as meta tensors."""

from __future__ import annotations

import json
from functools import cache

import torch

from tests.conftest import REFERENCE, require

KEY_LISTINGS = ("keys_tv2v.json", "keys_tvi2v.json")


@cache
def _listing(name: str) -> tuple[dict, ...]:
    return tuple(json.loads((REFERENCE / name).read_text())["keys"])


def reference_keys(name: str, *groups: str) -> list[dict]:
    """Entries (`key`, `shape`, `dtype`, `group`, ...) of a reference key listing, optionally of some groups only.

    Skips the calling test when the reference data is not next to the checkout.
    """
    require(REFERENCE / name)
    return [entry for entry in _listing(name) if not groups or entry["group"] in groups]


def meta_checkpoint(entries: list[dict]) -> dict[str, torch.Tensor]:
    """A checkpoint dict of meta tensors with the listed names, shapes and dtypes: full size at no memory cost."""
    return {
        entry["key"]: torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]), device="meta")
        for entry in entries
    }


def meta_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    """Every state-dict name of `module` with its shape."""
    return {name: tensor.shape for name, tensor in module.state_dict().items()}
