"""Who owns a run folder: the run marker, the lock that keeps one training per folder, and what `--overwrite` removes.

A folder is a training run when it holds `ccedit-run.json`, written by `ccedit train` when the run starts, owned by
this user. A new run starts only in a folder that does not exist or is empty; a run folder is continued with
`--resume` or cleared with `--overwrite`, which removes what a run writes (`RUN_ENTRIES`) and nothing else. A folder
that is neither is never written to, even with `--overwrite`: it is not ccedit's to replace.

The marker is also the lock: the running training holds an advisory lock (`flock`) on it for as long as it lives,
so a second training into the same folder is refused. The lock is on the marker rather than on the folder itself,
because publishing outputs (`io/publish.py`) waits on a folder's own lock.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from ..errors import UserError
from ..io.atomic import clean_stale_temporaries, try_lock

MARKER = "ccedit-run.json"
KIND = "ccedit train"
TRACKER_NAME = "ccedit-train"  # the TensorBoard run accelerate writes under the run folder
# What a run writes into its folder (`data` is the synthetic set); `--overwrite` removes these.
RUN_ENTRIES = ("config.yaml", "losses.jsonl", "checkpoints", "model", "samples", "data", TRACKER_NAME)
_MAX_MARKER_BYTES = 64 * 1024


class RunFolder:
    """A claimed run folder: holds the lock until `release` (or the process ends)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def folder_kind(output: Path) -> str:
    """`new` (absent or empty), `run` (holds this user's run marker) or `other`."""
    if not output.exists() and not output.is_symlink():
        return "new"
    if not output.is_dir():
        return "other"
    if not any(output.iterdir()):
        return "new"
    fd = _open_marker(output)
    if fd is None:
        return "other"
    os.close(fd)
    return "run"


def check_run_folder(output: Path, resume: bool, overwrite: bool) -> str:
    """Refuse, in one line, a run folder these flags may not use; returns its kind. Reads only."""
    if resume and overwrite:
        raise UserError("--resume continues the run and --overwrite starts it over: pass one of them")
    kind = folder_kind(output)
    if kind == "other":
        what = "a file" if output.exists() and not output.is_dir() else "a folder that is not a ccedit training run"
        raise UserError(f"output={output} is {what} (no {MARKER}); nothing there is replaced, even with --overwrite: "
                        "choose a new or empty folder")
    if kind == "run" and not (resume or overwrite):
        raise UserError(f"output={output} holds a training run: pass --resume to continue it or --overwrite to "
                        f"remove it ({', '.join(RUN_ENTRIES)}) and start over")
    if kind == "new" and resume:
        raise UserError(f"--resume: no checkpoint in {output}: run without --resume to start")
    return kind


def inputs_inside(paths: dict[str, str | None], output: Path) -> str | None:
    """The first setting (of `paths`, setting name -> path) that lies inside what `--overwrite` removes."""
    removed = [(output / entry).resolve() for entry in RUN_ENTRIES]
    for name, value in paths.items():
        if value is None:
            continue
        where = Path(value).expanduser().resolve()
        if any(where == entry or entry in where.parents for entry in removed):
            return name
    return None


def claim_run_folder(output: Path, resume: bool, overwrite: bool) -> RunFolder:
    """Lock the run folder for this training (creating it and its marker for a new run); with `overwrite`, remove
    the earlier run's files. Checks again under the lock, as another run may have started since the first check."""
    kind = check_run_folder(output, resume, overwrite)
    if kind == "new":
        output.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(output / MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            raise _busy(output) from None
        try_lock(fd)
        os.write(fd, (json.dumps({"kind": KIND}) + "\n").encode())
        os.fsync(fd)
        return RunFolder(output, fd)
    fd = _open_marker(output)
    if fd is None:  # replaced since the first check
        raise _busy(output)
    if not try_lock(fd):
        os.close(fd)
        raise _busy(output)
    if overwrite:
        _remove_run(output)
    return RunFolder(output, fd)


def _remove_run(output: Path) -> None:
    for entry in RUN_ENTRIES:
        path = output / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()  # a link is removed, never what it points to
    clean_stale_temporaries(output)


def _busy(output: Path) -> UserError:
    return UserError(f"another `ccedit train` is writing to {output}: wait for it to finish or choose another output")


def _open_marker(output: Path) -> int | None:
    """An open descriptor of the folder's run marker when it is one (a regular file of this user holding ccedit's
    record), else None."""
    try:
        fd = os.open(output / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        is_ours = stat.S_ISREG(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid())
        if is_ours and info.st_size <= _MAX_MARKER_BYTES:
            record = json.loads(os.pread(fd, _MAX_MARKER_BYTES, 0) or b"null")
            if isinstance(record, dict) and record.get("kind") == KIND:
                return fd
    except (OSError, ValueError):
        pass
    os.close(fd)
    return None
