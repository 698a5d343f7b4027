"""The results folder: one JSON line per (method, video, edit), the run's settings, resume keys and merging.

Rows are appended as each item finishes (flushed and synced), one file per process; a line torn by a killed
process is dropped when the file is next opened, so an interrupted run loses only the item in progress. The
merged `results.jsonl` and every table are replaced atomically (`io.atomic_path`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_path
from ..io.fingerprint import file_fingerprint  # noqa: F401 - the sources' fingerprints

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SETTINGS = "eval.json"  # what makes rows comparable: the evaluation's video settings and metrics
MEDIA = "media"
TABLES = ("summary.csv", "summary.md", "report.html")
SETTINGS_SECTIONS = ("video", "metrics", "report")  # the keys of `eval.json`, which mark a folder as an evaluation


def part_name(rank: int) -> str:
    return f"results.part{rank}.jsonl"


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys: the same settings give the same key on any machine."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def is_evaluation(output: Path) -> bool:
    """Whether `output` is an evaluation's folder: it holds the `eval.json` ccedit writes there, a JSON object of
    exactly the settings `runner.run_settings` gives. Only such a folder's files are ever deleted (`--overwrite`)."""
    previous = _read_json(output / SETTINGS) if (output / SETTINGS).is_file() else None
    return isinstance(previous, dict) and set(previous) == set(SETTINGS_SECTIONS)


def check_output(output: Path, settings: dict, *, overwrite: bool) -> None:
    """Refuse a folder holding results of other settings unless `overwrite`, and one that holds anything but an
    evaluation (an empty folder is fine) even with it."""
    if output.is_file():
        raise UserError(f"output {output} is a file: name a folder")
    if is_evaluation(output):
        previous = _read_json(output / SETTINGS)
        if previous == settings or overwrite:
            return
        changed = sorted(k for k in set(settings) | set(previous) if previous.get(k) != settings.get(k))
        raise UserError(f"{output} holds results of a different evaluation ({', '.join(changed)} in {SETTINGS} "
                        "differs): choose another output folder, or pass --overwrite to discard them")
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"{output} is not empty and holds no evaluation (no {SETTINGS} of ccedit's): choose a new "
                        "or empty folder; --overwrite only replaces an earlier evaluation")


def start_output(output: Path, settings: dict, *, overwrite: bool) -> None:
    """Create the folder; with `overwrite` and other settings, delete the earlier results (only ccedit's files, and
    only in an evaluation's folder: the caller holds its lock and has run `check_output`)."""
    check_output(output, settings, overwrite=overwrite)  # again, under the lock: another run may have written
    state = output / SETTINGS
    same = state.is_file() and _read_json(state) == settings
    if overwrite and not same and is_evaluation(output):
        for name in [RESULTS, SETTINGS, *TABLES, *(p.name for p in output.glob("results.part*.jsonl"))]:
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / MEDIA, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    if not same:
        with atomic_path(state) as tmp:
            tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_rows(output: Path) -> list[dict]:
    """Every row of `results.jsonl` and of unmerged per-process files, in file order; torn lines skipped."""
    rows = []
    for path in [output / RESULTS, *sorted(output.glob("results.part*.jsonl"))]:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s line %d is incomplete (an interrupted run): that item is done again", path, number)
    return rows


def latest_by_key(rows: list[dict]) -> dict[str, dict]:
    """The last row of each key; a finished row is never replaced by a failed one."""
    latest: dict[str, dict] = {}
    for row in rows:
        old = latest.get(row["key"])
        if old is None or row["status"] == "ok" or old["status"] != "ok":
            latest[row["key"]] = row
    return latest


class RowWriter:
    """Appends rows to one file, each line flushed and synced before the next item starts."""

    def __init__(self, path: Path):
        self.path = path
        _drop_torn_tail(path)

    def append(self, row: dict) -> None:
        line = json.dumps(row, sort_keys=True, allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a killed writer), so the next row starts on a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def merge(output: Path) -> list[dict]:
    """Fold the per-process files into `results.jsonl` (one row per key), atomically; return its rows."""
    rows = list(latest_by_key(read_rows(output)).values())
    with atomic_path(output / RESULTS) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows), encoding="utf-8")
    for part in output.glob("results.part*.jsonl"):
        part.unlink()
    return rows
