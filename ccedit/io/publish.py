"""Publishing a set of outputs all together: staged, verified, then moved into place under a journal.

A run writes its outputs (e.g. an edit's mp4, GIF, frames folder, side-by-side and sidecar) into a staging folder
`.<first name>.ccedit-stage-<random>/new/` next to them, then publishes them under the output folder's lock:

1. the journal `journal.json` is written in state `replacing`, listing the new names and the old ones to replace;
2. the old outputs are moved into the staging folder's `old/`, the last name (the sidecar) first;
3. the journal is rewritten in state `committed` (an atomic rename: this is the commit point);
4. the new outputs are moved into place, the last name (the sidecar) last; the staging folder is deleted.

A run that dies leaves its staging folder, still locked while the process lives. The next run into the same folder
(`recover`, called before its destination check and again before it publishes) takes each staging folder whose
lock is free and rolls it back (no journal or `replacing`: the old outputs are moved back, the new ones dropped) or
forward (`committed`: the remaining new outputs are moved in). So after recovery the folder holds the complete old
set or the complete new set, never a mix; a sidecar that is present always sits next to every output it lists.

Recovery acts only on a staging folder it can trust to be ccedit's, written by this user (`_stage_problem`): a real
folder owned by the current user and writable by nobody else, holding the marker `stage.json` that ccedit writes
when it creates the folder (the set's names) and a journal of the same owner and mode that names only those names.
Anything else that looks like a staging folder is left alone with a warning, so a journal planted by someone else
cannot move files in or delete anything. Recovery never deletes outside the staging folder: rolling forward over a
name that exists meanwhile leaves the staging folder in place (with a warning) instead of removing that name.

Without `overwrite`, a name that exists at publish time (another run published it meanwhile) refuses the whole
set with a `UserError`. Standard library only: the rename and lock primitives are all that is needed, and no
maintained library offers a multi-file transaction.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ccedit.errors import UserError
from ccedit.io.atomic import TEMP_MARK, clean_stale_temporaries, lock, ownership_problem, try_lock
from ccedit.io.paths import read_json_or_none

logger = logging.getLogger(__name__)

STAGE_MARK = ".ccedit-stage-"
JOURNAL = "journal.json"
# Written into every staging folder when ccedit creates it: the set's names. Recovery touches no folder without it.
STAGE_MARKER = "stage.json"
# OSErrors that say the destination cannot take the outputs: reported as one line, not a traceback.
_DESTINATION_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class Stage:
    """Where a run writes the outputs it is going to publish."""

    def __init__(self, root: Path, targets: Sequence[Path]):
        self.root = root
        self._names = {t.name for t in targets}

    def path(self, target: str | os.PathLike) -> Path:
        """The staged path of the final output `target` (one of the set's names)."""
        name = Path(target).name
        if name not in self._names:
            raise ValueError(f"{name} is not one of the outputs being published ({', '.join(sorted(self._names))})")
        return self.root / "new" / name


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable; keeps type checkers content


def check_destination(
    targets: Sequence[Path],
    *,
    overwrite: bool,
    folders: Sequence[Path] = (),
    estimate_bytes: int = 0,
    flag: str = "--output",
) -> None:
    """Refuse, with one line, a destination the outputs cannot be published to; call it before any expensive work.

    Recovers what killed runs left in the folder first (so an interrupted replacement is completed or undone before
    deciding whether the outputs exist). Then: a file output whose path is a folder, a folder output whose path is
    a file, an existing output without `overwrite`, a folder that cannot be created or written (permissions, a
    read-only file system) and less free space than `estimate_bytes` are each a `UserError`.

    Args:
        targets: every output path (all in one folder); `folders` names those that are folders.
        overwrite: whether existing outputs may be replaced.
        estimate_bytes: rough size of the outputs; 0 skips the free-space check.
        flag: the option that chose the destination, for the hint.
    """
    folder = targets[0].parent
    recover(folder)
    folder_outputs = {Path(f) for f in folders}
    for target in targets:
        if target.is_dir() and target not in folder_outputs:
            raise UserError(f"{target} is a folder: give {flag} a file name, e.g. {target / 'out.mp4'}")
        if target.exists() and target in folder_outputs and not target.is_dir():
            raise UserError(f"{target} is a file, but this output is a folder: remove it or change {flag}")
        if os.path.lexists(target) and not overwrite:  # a link to nothing is refused at publish time too
            raise UserError(f"{target} already exists{' (a link to a missing file)' if not target.exists() else ''}: "
                            "pass --overwrite to replace it")
    existing = check_writable_folder(folder, flag)
    if estimate_bytes:
        free = shutil.disk_usage(existing).free
        if free < estimate_bytes:
            raise UserError(
                f"{existing} has {format_bytes(free)} free but the outputs need about {format_bytes(estimate_bytes)}: "
                f"free some space or change {flag}"
            )


def check_writable_folder(folder: Path, flag: str) -> Path:
    """Refuse, with one line, a folder that cannot be created or written (permissions, a read-only file system, a
    file where a folder would go, a name the file system cannot hold); return the nearest folder that exists."""
    existing = Path(folder)
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as error:  # e.g. a name longer than the file system allows
        raise UserError(f"cannot create the output folder {folder}: {error.strerror}; change {flag}") from None
    if not existing.is_dir():
        raise UserError(f"cannot create the output folder {folder}: {existing} is a file; change {flag}")
    try:
        probe_fd, probe = tempfile.mkstemp(prefix=f".probe{TEMP_MARK}", dir=existing)
        os.close(probe_fd)
        os.unlink(probe)
    except OSError as error:
        where = folder if existing == folder else f"{existing} (to create {folder})"
        raise UserError(f"cannot write in {where}: {error.strerror}; change {flag} or fix the folder") from error
    return existing


@contextlib.contextmanager
def publish_set(
    targets: Sequence[str | os.PathLike],
    *,
    overwrite: bool,
    replaces: Sequence[str | os.PathLike] = (),
    may_replace: Callable[[Path], str | None] | None = None,
) -> Iterator[Stage]:
    """Stage the outputs `targets` (all in one folder, the sidecar last), then publish them all together.

    The block writes each target to `stage.path(target)`; when it ends without an error the set is published as
    the module docstring describes. An error or interruption in the block publishes nothing and leaves any earlier
    outputs untouched; a full disk or a read-only folder becomes a one-line `UserError`.

    Args:
        targets: the final paths, in publishing order; the last one appears last and is removed first.
        overwrite: replace existing outputs; without it, any target that exists at publish time refuses the set.
        replaces: other paths of the same set (e.g. the GIF an earlier run wrote), removed with the old outputs
            when `overwrite` is given.
        may_replace: called with each existing path about to be replaced; a returned string refuses the set with
            that message (e.g. "not a model folder").
    """
    targets = [Path(t) for t in targets]
    folder = targets[0].parent
    if any(t.parent != folder for t in targets):
        raise ValueError("all outputs of a set must be in one folder")
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        _recover_locked(folder)
        root = Path(tempfile.mkdtemp(prefix=f".{targets[0].name}{STAGE_MARK}", dir=folder))
        # Held while this process lives: the next run leaves a live run's staging folder alone.
        stage_fd = os.open(root, os.O_RDONLY)
        try_lock(stage_fd)
        _write_private_json(root / STAGE_MARKER, {"names": [t.name for t in [*targets, *map(Path, replaces)]]})
    try:
        (root / "new").mkdir()
        try:
            yield Stage(root, targets)
            missing = [t.name for t in targets if not os.path.lexists(root / "new" / t.name)]
            if missing:
                raise RuntimeError(f"outputs were not staged: {', '.join(missing)}")
            _sync_tree(root / "new")
            with _folder_lock(folder):
                _recover_locked(folder)
                _publish(root, folder, targets, [Path(r) for r in replaces], overwrite, may_replace)
        except UserError:
            raise
        except Exception as error:
            # ffmpeg and safetensors report a full disk in their own errors: their words are matched, as the disk
            # may have room again by the time the error is looked at.
            if _says_disk_full(error) or (isinstance(error, OSError) and (
                    error.errno in _DESTINATION_ERRNOS or _is_full(folder))):
                raise _destination_error(error, folder) from error
            raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.close(stage_fd)


def recover(folder: str | os.PathLike) -> list[Path]:
    """Roll back or forward every staging folder in `folder` whose run is dead; clean dead runs' temporaries.

    Returns the staging folders that were resolved.
    """
    folder = Path(folder)
    try:
        with _folder_lock(folder):
            return _recover_locked(folder)
    except OSError:
        return []  # no such folder, or not readable: nothing of ours to recover there


def _recover_locked(folder: Path) -> list[Path]:
    resolved = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return resolved
    for entry in entries:
        if not (entry.name.startswith(".") and STAGE_MARK in entry.name and entry.is_dir()):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile
        try:
            if not try_lock(fd):
                continue  # its run is alive
            problem = _stage_problem(entry)
            if problem:
                logger.warning("leaving %s alone: %s, so ccedit does not trust it to recover outputs from; "
                               "delete it yourself if it is not needed", entry, problem)
                continue
            if _resolve(entry, folder):
                resolved.append(entry)
        finally:
            os.close(fd)
    clean_stale_temporaries(folder)
    return resolved


def _stage_problem(root: Path) -> str | None:
    """Why the staging folder `root` cannot be trusted to be one this user's ccedit wrote (None: it can).

    Its folder, the marker `stage.json` and the journal (when there is one) must be real (no links), owned by the
    current user and writable by nobody else; the journal may name only the set's names that the marker lists.
    """
    for path, is_dir in ((root, True), (root / STAGE_MARKER, False), (root / JOURNAL, False)):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if path.name == JOURNAL:
                continue  # the run died before publishing: nothing was moved
            return f"it has no {STAGE_MARKER} (ccedit writes one into every staging folder it creates)"
        except OSError as error:
            return f"{path.name} cannot be read ({error.strerror})"
        problem = _ownership_problem(info, is_dir)
        if problem:
            return f"{'the folder' if is_dir else path.name} {problem}"
    marker = read_json_or_none(root / STAGE_MARKER)
    names = marker.get("names") if isinstance(marker, dict) else None
    if not isinstance(names, list) or not all(_is_plain_name(n) for n in names):
        return f"its {STAGE_MARKER} is not one ccedit wrote"
    if not root.name.startswith(f".{names[0] if names else ''}{STAGE_MARK}"):
        return f"its {STAGE_MARKER} names another set"
    if os.path.lexists(root / JOURNAL):
        journal = _read_journal(root)
        if journal is not None and not set(journal["new"]) | set(journal["old"]) <= set(names):
            return f"its {JOURNAL} names files outside its set ({', '.join(names)})"
    return None


def _ownership_problem(info: os.stat_result, is_dir: bool) -> str | None:
    """Why a staging folder or one of its files (its `lstat`) is not of the kind ccedit wrote, or not this user's."""
    if stat.S_ISLNK(info.st_mode):
        return "is a link"
    if stat.S_ISDIR(info.st_mode) != is_dir:
        return f"is not a {'folder' if is_dir else 'file'}"
    return ownership_problem(info)


def _is_plain_name(name: object) -> bool:
    """A name inside the output folder: no folder part, not `.` or `..`."""
    return isinstance(name, str) and bool(name) and "/" not in name and os.sep not in name and name not in (".", "..")


def _publish(root: Path, folder: Path, targets: list[Path], replaces: list[Path], overwrite: bool,
             may_replace: Callable[[Path], str | None] | None) -> None:
    if not overwrite:
        taken = [t for t in targets if os.path.lexists(t)]
        if taken:
            raise UserError(
                f"{taken[0]} was created by another run while this one worked; nothing of this run was written: "
                "pass --overwrite to replace it"
            )
    # The old set: what exists of the new names and of the extra names; the sidecar (last target) goes first.
    candidates = [*reversed(targets), *(replaces if overwrite else [])]
    old_names = [p.name for p in candidates if os.path.lexists(p)]
    old_names = list(dict.fromkeys(old_names))
    if may_replace is not None:
        for name in old_names:
            refusal = may_replace(folder / name)
            if refusal:
                raise UserError(refusal)
    new_names = [t.name for t in targets]
    (root / "old").mkdir()
    _write_journal(root, "replacing", new_names, old_names)
    committed = False
    try:
        for name in old_names:
            os.rename(folder / name, root / "old" / name)
        _write_journal(root, "committed", new_names, old_names)
        committed = True
        for name in new_names:
            os.rename(root / "new" / name, folder / name)
        _fsync_dir(folder)
    except BaseException:
        # Finish or undo now; if this is interrupted as well, the journal lets the next run do it.
        _resolve(root, folder, committed=committed)
        raise


def _resolve(root: Path, folder: Path, committed: bool | None = None) -> bool:
    """Complete (`committed`) or undo an interrupted publish from its staging folder, then delete the folder.

    Nothing outside the staging folder is deleted: a name that exists in `folder` is never moved over. When that
    leaves a new output in the staging folder, the folder stays (with a warning) and False is returned.
    """
    journal = _read_journal(root)
    if committed is None:
        committed = journal is not None and journal.get("state") == "committed"
    kept = []
    if journal is not None:
        moves = [("new", name) for name in journal["new"]] if committed else [("old", name) for name in journal["old"]]
        for part, name in moves:
            if not os.path.lexists(root / part / name):
                continue
            if os.path.lexists(folder / name):
                if committed:
                    kept.append(name)  # something took the name meanwhile: keep both, delete neither
                continue
            os.rename(root / part / name, folder / name)
        _fsync_dir(folder)
    if kept:
        logger.warning("%s exists in %s beside an unfinished publish of the same name in %s; both are kept: "
                       "move the one you want into place and delete %s", ", ".join(kept), folder, root.name, root)
        return False
    shutil.rmtree(root, ignore_errors=True)
    return True


def _write_journal(root: Path, state: str, new: list[str], old: list[str]) -> None:
    _write_private_json(root / JOURNAL, {"state": state, "new": new, "old": old})
    _fsync_dir(root)


def _write_private_json(path: Path, value: dict) -> None:
    """Write `value` to `path` atomically, readable and writable by this user alone (as recovery requires)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_journal(root: Path) -> dict | None:
    journal = read_json_or_none(root / JOURNAL)  # None: not yet written (nothing was moved) or torn (never renamed)
    if not isinstance(journal, dict) or not {"state", "new", "old"} <= set(journal):
        return None
    if not all(isinstance(journal[part], list) for part in ("new", "old")):
        return None
    # Names only: a journal never moves anything outside its own folder and staging folder.
    if not all(_is_plain_name(n) for n in [*journal["new"], *journal["old"]]):
        return None
    return journal


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise publishing and recovery in one folder (an advisory lock on the folder itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        lock(fd)
        yield
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Flush staged files to disk before the commit, so a crash after it cannot publish empty files."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1024 * 1024
    except OSError:
        return False


def _says_disk_full(error: BaseException) -> bool:
    """Whether an error of any library (an encoder's, a serialiser's) reports a full disk or an exceeded quota."""
    text = str(error).lower()
    return any(words in text for words in ("no space left on device", "disk quota exceeded", "file too large"))


def _destination_error(error: BaseException, folder: Path) -> UserError:
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _says_disk_full(error):
        reason = "the disk is full"
    elif _is_full(folder):
        reason = f"the disk is full ({error.strerror or error})"
    else:
        reason = error.strerror or str(error)
    return UserError(f"could not write the outputs in {folder}: {reason}; nothing was replaced: "
                     "free some space or choose another output folder")


__all__ = ["STAGE_MARK", "Stage", "check_destination", "format_bytes", "publish_set", "recover"]
