"""The registered model kinds, and the kind a model reference belongs to."""

from __future__ import annotations

from .base import ModelKind

KINDS: dict[str, ModelKind] = {}
DEFAULT_MODEL = "tiny"  # what an edit uses when no model is named: built in, offline, seconds on a CPU


def register_kind(kind: ModelKind) -> ModelKind:
    """Add `kind`; a later kind may not take a name an earlier one answers to."""
    taken = {name for other in KINDS.values() for name in other.names}
    if kind.name in KINDS or taken & set(kind.names):
        raise ValueError(f"model kind {kind.name!r} takes a name that is registered already")
    KINDS[kind.name] = kind
    return kind


def kind_for(model: str) -> ModelKind:
    """The kind that answers to `model` by name, else the kind that takes folders and hub ids."""
    for kind in KINDS.values():
        if kind.claims(model):
            return kind
    return folder_kind()


def folder_kind() -> ModelKind:
    """The kind of any model reference no kind answers to by name: a folder or hub id."""
    return next(kind for kind in KINDS.values() if kind.folders)


def named_models() -> tuple[str, ...]:
    """Every model reference a kind answers to by name (`--model tiny`), in registration order."""
    return tuple(name for kind in KINDS.values() for name in kind.names)


def builtin_models() -> tuple[str, ...]:
    """The named models built offline with random weights."""
    return tuple(name for kind in KINDS.values() if kind.builtin for name in kind.names)


def models_help() -> str:
    """What `--model` takes, from the registered kinds."""
    named = [f"{name} ({kind.description})" for kind in KINDS.values() for name in kind.names]
    return f"{'; '.join(named)}; or {folder_kind().description}"
