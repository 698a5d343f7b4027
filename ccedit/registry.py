"""Classes registered under short names (annotators, metrics, evaluation methods), built from a config's options.

One place for the one-line errors a config's name or option gets: an unknown name lists the registered ones, an
unknown option lists the class's constructor options.
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import UserError


def build_registered(registry: dict[str, type], kind: str, name: str, options: dict[str, Any]) -> Any:
    """`registry[name](**options)`, or a `UserError` naming the valid names or options (`kind`: what a name is,
    e.g. "metric")."""
    cls = registry.get(name)
    if cls is None:
        raise UserError(f"unknown {kind} {name!r}: choose one of {', '.join(sorted(registry))}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{kind} {name!r} has no option {', '.join(unknown)}: its options are {', '.join(accepted)}")
    return cls(**options)
