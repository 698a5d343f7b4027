"""Classes registered under short names (annotators, metrics, evaluation methods), built from a config's options.

One place for the one-line errors a config's name or option gets: an unknown name lists the registered ones, an
unknown option lists the class's constructor options.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UserError


def build_registered(registry: dict[str, type], kind: str, name: str, options: dict[str, Any],
                     given: Mapping[str, Any] | None = None) -> Any:
    """`registry[name](**given, **options)`, or a `UserError` naming the valid names or options (`kind`: what a
    name is, e.g. "metric"). `given` are the arguments of the registered classes' contract, supplied by the
    caller: they are not options, so a config cannot set them."""
    cls = registry.get(name)
    if cls is None:
        raise UserError(f"unknown {kind} {name!r}: choose one of {', '.join(sorted(registry))}")
    given = dict(given or {})
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self" and p not in given]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{kind} {name!r} has no option {', '.join(unknown)}: its options are {', '.join(accepted)}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # a hint that names something not importable at run time: no types to check against
        hints = {}
    for option, value in options.items():
        if option in hints and not _fits(value, hints[option]):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise UserError(f"{kind} {name!r}: option {option} must be {_hint_name(hints[option])}, got "
                            f"{type(value).__name__} {shown}")
    return cls(**given, **options)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value can stand for a constructor parameter of type `hint` (a lenient check: a YAML list
    for a sequence, a mapping for a mapping, an integer for a float; hints it cannot read pass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if issubclass(hint, Mapping):
        return isinstance(value, Mapping)
    if issubclass(hint, Sequence) and hint is not str:
        return isinstance(value, (list, tuple))
    return isinstance(value, hint)


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")
