"""Inputs brought into the work folder (the studio's uploads): copied to `WORK/inputs/` under their content's
hash, never under the name they came with, so an upload's name cannot choose or overwrite a path."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..io.atomic import atomic_path

INPUTS = "inputs"


def store_input(work: Path, source: Path, suffix: str) -> Path:
    """Copy `source` into `WORK/inputs/<sha256><suffix>` (once: the same content is the same file) and return it.
    `suffix` is the checked file type's extension, chosen by the caller, not taken from an upload's name."""
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    target = Path(work) / INPUTS / f"{digest.hexdigest()}{suffix}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target
