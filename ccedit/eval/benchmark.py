"""Benchmark files -> edit items: BalanceCC-format JSON and LOVEU-TGVE-style sheets (CSV, or JSON rows).

Every problem with the file is one line naming the item and the field, raised before any video is read. Items
whose video is missing are still listed: the run records them as failed and goes on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io.paths import leaves_folder, path_is
from ..io.video import VIDEO_EXTENSIONS
from .config import BenchmarkConfig

# The edit columns of the LOVEU-TGVE 2023 sheet as published, named by editing type alone.
LOVEU_EDIT_TYPES = ("style", "object", "background", "multiple")
# The longest name a file may have on the common file systems (bytes); a video's name gets an extension added.
NAME_MAX = 255


@dataclass(frozen=True)
class BenchmarkItem:
    """One (video, edit) pair of a benchmark."""

    video: str  # the video's name in the benchmark
    edit: int  # the edit's position among the video's edits
    source_prompt: str
    target_prompt: str
    editing_type: str
    video_type: str = ""
    fantasy_level: int | None = None
    mask: str | None = None  # the region the edit may change (a mask spec, `benchmark.mask`); None: everywhere

    @property
    def id(self) -> str:
        return f"{self.video}/{self.edit}"

    def fields(self) -> dict[str, Any]:
        """The names a results-folder pattern may use."""
        return {"video": self.video, "edit": self.edit, "prompt": self.target_prompt,
                "source_prompt": self.source_prompt, "editing_type": self.editing_type,
                "video_type": self.video_type, "fantasy_level": self.fantasy_level}


def read_benchmark(config: BenchmarkConfig) -> list[BenchmarkItem]:
    """The items of the benchmark file, filtered (`include`, `editing_types`) and limited."""
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise UserError(f"benchmark file not found: {path}; check benchmark.path")
    if config.format == "balancecc":
        items = read_balancecc(path)
    else:
        rows = read_json_sheet(path) if config.format == "loveu_json" else read_csv_sheet(path)
        items = read_loveu(path, config, rows)
    longest = NAME_MAX - max(len(e) for e in VIDEO_EXTENSIONS)
    for item in items:
        if leaves_folder(item.video):
            raise UserError(f"{path}: video name {item.video!r} is not a name inside benchmark.videos (an absolute "
                            "path, `~` or `..`): name each video by its file or folder name in benchmark.videos")
        size = len(item.video.encode("utf-8", "surrogatepass"))
        if size > longest:
            raise UserError(f"{path}: video name {item.video[:40]!r}... ({item.id}) is {size} bytes long, more than "
                            f"a file name may have with its extension ({longest}): shorten it, and its file's name")
    if config.include:
        unknown = sorted(set(config.include) - {i.video for i in items})
        if unknown:
            raise UserError(f"benchmark.include names {', '.join(unknown)}, which {path} does not list")
        items = [i for i in items if i.video in config.include]
    if config.editing_types:
        items = [i for i in items if i.editing_type in config.editing_types]
    if config.mask:
        items = [replace(i, mask=_item_mask(config.mask, i)) for i in items]
    return items[: config.limit] if config.limit is not None else items


def _item_mask(pattern: str, item: BenchmarkItem) -> str:
    try:
        return pattern.format(**item.fields())
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"benchmark.mask {pattern!r} cannot be filled for {item.id} ({type(e).__name__}: {e}): use "
                        f"the fields {', '.join(item.fields())} in braces") from None


def video_path(videos: str | Path, name: str) -> Path:
    """The clip of video `name`: `<videos>/<name>.<video extension>`, else the frame folder `<videos>/<name>/`.
    A clip that is not there gives the path it was expected at (reading it then fails, for that item only)."""
    root = Path(videos).expanduser()
    for extension in VIDEO_EXTENSIONS:
        candidate = root / f"{name}{extension}"
        if path_is(candidate):
            return candidate
    folder = root / name
    return folder if path_is(folder, Path.is_dir) else root / f"{name}.mp4"


def read_balancecc(path: Path) -> list[BenchmarkItem]:
    """BalanceCC's JSON: a list of videos, each with "Video Name", "Video Type", "Original Prompt" and an
    "Editing" list of {"Editing Type", "Target Prompt", "Fantasy Level"}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"{path} is not valid JSON{where}: {str(e).split(':')[0]}; fix the benchmark file") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of videos, got {type(data).__name__}")
    items = []
    for v, video in enumerate(data):
        where = f"{path}: video {v + 1}"
        if not isinstance(video, dict):
            raise UserError(f"{where} is not an object with \"Video Name\", \"Original Prompt\" and \"Editing\"")
        name = _text(video, "Video Name", where)
        where = f"{path}: video {name!r}"
        source = _text(video, "Original Prompt", where)
        video_type = str(video.get("Video Type", ""))
        edits = video.get("Editing")
        if not isinstance(edits, list):
            raise UserError(f"{where} has no \"Editing\" list: add its edits")
        for e, edit in enumerate(edits):
            edit_where = f"{where}, edit {e + 1}"
            if not isinstance(edit, dict):
                raise UserError(f"{edit_where} is not an object with \"Editing Type\" and \"Target Prompt\"")
            level = edit.get("Fantasy Level")
            if level is not None and not isinstance(level, int):
                raise UserError(f"{edit_where}: \"Fantasy Level\" must be a whole number, got {level!r}")
            items.append(BenchmarkItem(
                video=name, edit=e, source_prompt=source, target_prompt=_text(edit, "Target Prompt", edit_where),
                editing_type=_text(edit, "Editing Type", edit_where), video_type=video_type, fantasy_level=level,
            ))
    return items


def read_csv_sheet(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV sheet, by column name (the first row names the columns)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a readable CSV sheet ({e}); fix the benchmark file") from None


def read_json_sheet(path: Path) -> list[dict[str, str]]:
    """The rows of a sheet in JSON: a list of objects (one per row), or an object of columns, each an object of
    values by row (pandas' `to_json`). Numbers become text, null an empty cell."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"{path} is not valid JSON{where}; fix the benchmark file") from None
    if isinstance(data, dict) and data and all(isinstance(column, dict) for column in data.values()):
        keys = list(dict.fromkeys(k for column in data.values() for k in column))
        data = [{name: column.get(k) for name, column in data.items()} for k in keys]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of rows (objects by column name), got {type(data).__name__}")
    rows = []
    for r, row in enumerate(data):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {r + 1} is a JSON {type(row).__name__}, not an object of columns")
        cells = {}
        for column, value in row.items():
            if isinstance(value, (dict, list)):
                raise UserError(f"{path}: row {r + 1}, column {column!r} holds a JSON {type(value).__name__}: "
                                "each cell must be text or a number")
            cells[column] = "" if value is None else str(value)
        rows.append(cells)
    return rows


def edit_columns(columns: list[str], config: BenchmarkConfig) -> list[str]:
    """The columns that hold edits: `edit_columns` when given; else those ending in `edit_suffix`; else (an empty
    suffix: the sheet as published) those named by a LOVEU edit type (`style`, `object`, ...). The video and
    source-prompt columns and metadata (`num_frames`, `subset`, notes) are never edits."""
    if config.edit_columns:
        return [c for c in config.edit_columns if c in columns]
    if config.edit_suffix:
        return [c for c in columns if c and c.endswith(config.edit_suffix) and c != config.source_column]
    return [c for c in columns if c.strip().lower() in LOVEU_EDIT_TYPES]


def read_loveu(path: Path, config: BenchmarkConfig, rows: list[dict[str, str]]) -> list[BenchmarkItem]:
    """A LOVEU-TGVE-style sheet: one row per video, a source-prompt column and one column per edit type; each
    edit's editing type is its column's name (without `edit_suffix`)."""
    columns = list(dict.fromkeys(c for row in rows for c in row if isinstance(c, str)))
    for needed in (config.video_column, config.source_column):
        if needed not in columns:
            raise UserError(f"{path} has no column {needed!r} (columns: {', '.join(columns) or 'none'}); "
                            "set benchmark.video_column / benchmark.source_column")
    missing = [c for c in config.edit_columns if c not in columns]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r} of benchmark.edit_columns (columns: "
                        f"{', '.join(columns)})")
    edits = edit_columns(columns, config)
    if not edits:
        named = (f"ending in {config.edit_suffix!r}" if config.edit_suffix
                 else f"named {', '.join(LOVEU_EDIT_TYPES)}")
        raise UserError(f"{path} has no edit columns {named} (columns: {', '.join(columns)}); set "
                        "benchmark.edit_suffix or benchmark.edit_columns")
    items = []
    first_row = 2 if config.format == "loveu_csv" else 1  # a CSV sheet's first line names the columns
    for r, row in enumerate(rows):
        name = (row.get(config.video_column) or "").strip()
        if not name:
            continue  # LOVEU's sheets separate groups of videos with empty rows
        where = f"{path}: row {r + first_row} ({name})"
        source = (row.get(config.source_column) or "").strip()
        if not source:
            raise UserError(f"{where}: the column {config.source_column!r} is empty")
        for e, column in enumerate(edits):
            prompt = (row.get(column) or "").strip()
            if prompt:
                editing_type = column[: -len(config.edit_suffix)] if config.edit_suffix and column.endswith(
                    config.edit_suffix) else column
                items.append(BenchmarkItem(video=name, edit=e, source_prompt=source, target_prompt=prompt,
                                           editing_type=editing_type))
    return items


def _text(record: dict, field_name: str, where: str) -> str:
    value = record.get(field_name)
    if not isinstance(value, str) or not value.strip():
        problem = "is missing" if value is None else "must be non-empty text"
        raise UserError(f"{where}: field \"{field_name}\" {problem}; fix the benchmark file")
    return value.strip()
