"""Content fingerprints of files and frame folders, for keys that must change when an input is replaced in place."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_fingerprint(path: Path) -> str | None:
    """SHA-256 of a file, or of a frame folder's frames (names and contents of the images a clip is read from, not
    the rest of the folder: a folder given by mistake is not read whole); None when absent."""
    from ccedit.io.video import frame_files

    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else frame_files(path)
    for file in files:
        digest.update((file.name if file == path else str(file.relative_to(path))).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
