"""The results folder: one JSON line per (method, video, edit), the run's settings, resume keys and merging.

Rows are appended as each item finishes (flushed and synced), one file per process; a line torn by a killed
process is dropped when the file is next opened, so an interrupted run loses only the item in progress. A line
that is not a row as `runner.ItemEvaluator` writes it (damaged, edited by hand, not JSON, not UTF-8) is skipped with
a warning and its item done again: nothing in a row is trusted before `row_problem` passes it. The merged
`results.jsonl` and every table are replaced atomically (`io.atomic_path`).
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
from ..io.paths import leaves_folder, path_is, read_json_or_none
from ..io.publish import check_writable_folder

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SETTINGS = "eval.json"  # what makes rows comparable: the evaluation's video settings and metrics
MEDIA = "media"
TABLES = ("summary.csv", "summary.md", "report.html")
SETTINGS_SECTIONS = ("video", "metrics", "report")  # the keys of `eval.json`, which mark a folder as an evaluation


def slug(text: str) -> str:
    """A file name for a video or method name (the media folder's names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).lstrip(".") or "_"


def part_name(rank: int) -> str:
    return f"results.part{rank}.jsonl"


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys: the same settings give the same key on any machine."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def is_evaluation(output: Path) -> bool:
    """Whether `output` is an evaluation's folder: it holds the `eval.json` ccedit writes there, a JSON object of
    exactly the settings `runner.run_settings` gives. Only such a folder's files are ever deleted (`--overwrite`)."""
    previous = read_json_or_none(output / SETTINGS) if (output / SETTINGS).is_file() else None
    return isinstance(previous, dict) and set(previous) == set(SETTINGS_SECTIONS)


def check_output(output: Path, settings: dict, *, overwrite: bool) -> None:
    """Refuse a folder holding results of other settings unless `overwrite`, and one that holds anything but an
    evaluation (an empty folder is fine) even with it."""
    if path_is(output):
        raise UserError(f"output {output} is a file: name a folder")
    check_writable_folder(output, flag="output=")  # also a folder that cannot be made, or its name held
    if is_evaluation(output):
        previous = read_json_or_none(output / SETTINGS)
        if previous == settings or overwrite:
            return
        changed = changed_settings(previous, settings)
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(f"{output} holds results of a different evaluation (its {SETTINGS} has other {shown}): "
                        "choose another output folder, or pass --overwrite to discard them")
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"{output} is not empty and holds no evaluation (no {SETTINGS} of ccedit's): choose a new "
                        "or empty folder; --overwrite only replaces an earlier evaluation")


def changed_settings(previous, current, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between two `eval.json` values (`video.num_frames`, ...)."""
    if not isinstance(previous, dict) or not isinstance(current, dict):
        return [prefix or "settings"] if previous != current else []
    changed = []
    for key in sorted(set(previous) | set(current), key=str):
        changed += changed_settings(previous.get(key), current.get(key), f"{prefix}.{key}" if prefix else str(key))
    return changed


def start_output(output: Path, settings: dict, *, overwrite: bool) -> None:
    """Create the folder; with `overwrite` and other settings, delete the earlier results (only ccedit's files, and
    only in an evaluation's folder: the caller holds its lock and has run `check_output`)."""
    check_output(output, settings, overwrite=overwrite)  # again, under the lock: another run may have written
    state = output / SETTINGS
    same = state.is_file() and read_json_or_none(state) == settings
    if overwrite and not same and is_evaluation(output):
        for name in [RESULTS, SETTINGS, *TABLES, *(p.name for p in output.glob("results.part*.jsonl"))]:
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / MEDIA, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    if not same:
        with atomic_path(state) as tmp:
            tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


# What a row holds (runner.ItemEvaluator writes it), with the types each field may have.
ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,), "method": (str,), "item": (str,), "video": (str,), "edit": (int,), "editing_type": (str,),
    "video_type": (str,), "fantasy_level": (int, type(None)), "source_prompt": (str,), "target_prompt": (str,),
    "status": (str,), "error": (str, type(None)), "scores": (dict,), "metrics": (dict,), "media": (str, type(None)),
    "cost": (dict,),
}
STATUSES = ("ok", "failed")


def row_problem(row: Any) -> str | None:
    """What makes `row` unusable as a results row (None: it is one): a missing field, a value of the wrong type, a
    score that is not a number, a media path leading outside the folder."""
    if not isinstance(row, dict):
        return f"it is a JSON {type(row).__name__}, not an object"
    for name, types in ROW_FIELDS.items():
        if name not in row:
            return f"it has no {name!r}"
        if not isinstance(row[name], types) or (isinstance(row[name], bool) and bool not in types):
            return f"its {name!r} is {type(row[name]).__name__}"
    if row["status"] not in STATUSES:
        return f"its status {row['status']!r} is not one of {', '.join(STATUSES)}"
    numbers = [*row["scores"].values(), *row["cost"].values()]
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in numbers):
        return "a score or cost is not a number"
    if row["status"] == "ok" and (row["media"] is None or leaves_folder(row["media"])):
        return "its media path is missing or leads outside the folder"
    return None


def read_rows(output: Path, *, warn: bool = True) -> list[dict]:
    """Every row of `results.jsonl` and of unmerged per-process files, in file order. A line that is not a row
    (torn by a killed run, damaged, not UTF-8, not JSON, nested too deep, a wrong shape) is skipped with a warning:
    its item is done again (`warn`: say so; the run reads the folder twice, and warns the first time)."""
    rows = []
    for path in [output / RESULTS, *sorted(output.glob("results.part*.jsonl"))]:
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}; fix its permissions or choose another "
                            "output") from None
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                problem = row_problem(row)
            except UnicodeDecodeError:
                problem = "it is not UTF-8 text"
            except json.JSONDecodeError:
                problem = "it is not complete JSON (an interrupted run?)"
            except RecursionError:
                problem = "it is nested too deeply"
            if problem:
                if warn:
                        logger.warning("%s line %d is not a results row (%s): skipped, its item is done again", path,
                                   number, problem)
                continue
            rows.append(row)
    return rows


def latest_by_key(rows: list[dict]) -> dict[str, dict]:
    """The last row of each key; a finished row is never replaced by a failed one."""
    latest: dict[str, dict] = {}
    for row in rows:
        old = latest.get(row["key"])
        if old is None or row["status"] == "ok" or old["status"] != "ok":
            latest[row["key"]] = row
    return latest


def rows_to_show(rows: list[dict], selected: list[dict]) -> list[dict]:
    """What the tables and the report show: one row per (item, method) among every row of the folder. This run's
    `selected` rows come first and stand for their pairs; a pair this run did not select keeps its last row (an
    earlier run's selection, or a method's earlier settings under the same name)."""
    shown = {(r["item"], r["method"]): r for r in selected}
    earlier: dict[tuple[str, str], dict] = {}
    for row in rows:
        pair = (row["item"], row["method"])
        if pair not in shown:
            earlier[pair] = row
    return [*shown.values(), *earlier.values()]


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
    rows = list(latest_by_key(read_rows(output, warn=False)).values())  # damaged lines are left out
    with atomic_path(output / RESULTS) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows), encoding="utf-8")
    for part in output.glob("results.part*.jsonl"):
        part.unlink()
    return rows
