"""Names that must stay inside a folder (a benchmark's video names, a results folder's per-edit paths), and looking at
paths that may not even be nameable here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath


def leaves_folder(relative: str) -> bool:
    """Whether the relative path `relative`, joined to a folder, could name something outside it: an absolute path
    (on any system), a home folder (`~`) or a `..` part. Links inside the folder are the folder owner's choice."""
    text = str(relative)
    if not text or text.startswith("~"):
        return True
    for path in (PurePosixPath(text), PureWindowsPath(text)):
        if path.is_absolute() or path.anchor or ".." in path.parts:
            return True
    return False


def path_is(path: Path, test: Callable[[Path], bool] = Path.is_file) -> bool:
    """`test(path)` (is it a file, a folder...), False where the path cannot even be looked up (a name the file
    system cannot hold)."""
    try:
        return test(path)
    except OSError:
        return False


def read_json_or_none(path: Path):
    """The JSON value in `path`, or None when it cannot be read as JSON (missing, damaged, not UTF-8, nested too
    deep): for files a process may have been killed while writing."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None
