"""Atomic output: write to a temporary sibling, then rename, so no half-written file or folder is ever visible.

Temporaries are named `.<name>.ccedit-tmp-<random><suffix>` (`TEMP_MARK`) and locked (`flock`) by the process
writing them, so `clean_stale_temporaries` can tell a dead run's leftovers from a live run's work in progress; it
deletes only those of the current user that nobody else can write (as `tempfile` creates them), never another
user's files that merely carry the name.
Published files get the mode the user's umask gives a new file (`tempfile` creates them 0600 / 0700).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; temporaries are then cleaned by age alone
    fcntl = None

TEMP_MARK = ".ccedit-tmp-"
# A temporary younger than this is never cleaned: it may belong to a run between creating and locking it.
STALE_AFTER_SECONDS = 60.0


def user_mode(is_dir: bool) -> int:
    """The permission bits a new file (0666) or folder (0777) gets under the process's umask."""
    umask = _current_umask()
    return (0o777 if is_dir else 0o666) & ~umask


def _current_umask() -> int:
    # /proc reports it without changing it; elsewhere the set-and-restore dance is the only portable way.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def try_lock(fd: int) -> bool:
    """Take an exclusive advisory lock on `fd` without waiting; True when taken (or when locks are unavailable)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # a file system without flock support: fall back to age alone
    return True


def lock(fd: int) -> None:
    """Take an exclusive advisory lock on `fd`, waiting for it."""
    if fcntl is not None:
        with contextlib.suppress(OSError):  # no flock support on this file system: proceed unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold the advisory lock on `folder` (the same lock publishing takes) for the block; a folder another live
    process holds is refused at once with the one-line `UserError` `busy`, instead of waiting for it."""
    from ccedit.errors import UserError

    fd = os.open(folder, os.O_RDONLY)
    try:
        if not try_lock(fd):
            raise UserError(busy)
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on `path` (file or folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)  # closing drops the probe's own lock


def ownership_problem(info: os.stat_result) -> str | None:
    """Why a file or folder (its `lstat`) is not the current user's own, writable by nobody else (None: it is).
    What ccedit may delete or trust in a shared folder passes this test."""
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove `atomic_path` temporaries in `folder` left by dead runs: unlocked, older than a minute, this user's
    own and writable by nobody else (anything else that carries the name is left alone)."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(".") and TEMP_MARK in entry.name):
            continue
        try:
            info = entry.lstat()
            if now - info.st_mtime < STALE_AFTER_SECONDS or ownership_problem(info) or is_locked(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue  # e.g. removed meanwhile by another run
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, on failure delete it.

    The temporary name keeps the final suffix (`.out.ccedit-tmp-xxxx.mp4`) so writers that pick a format from the
    extension still work. An existing `path` is replaced only when the block succeeds; the caller decides
    beforehand whether replacing is allowed (`--overwrite`). The result has the mode the umask gives new files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent))
        fd = os.open(tmp, os.O_RDONLY)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}{TEMP_MARK}", suffix=path.suffix, dir=path.parent)
        tmp = Path(name)
    try_lock(fd)  # held until this block ends, so no other run mistakes the temporary for a dead one's
    try:
        yield tmp
        os.chmod(tmp, user_mode(is_dir))
        if is_dir and path.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
