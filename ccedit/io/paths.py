"""Names that must stay inside a folder: a benchmark's video names, a results folder's per-edit paths."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath


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
