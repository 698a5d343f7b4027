"""A batch's jobs file, read and checked before any model loads.

YAML: a list of mappings; CSV: a header row and one job per row. The fields are `clip`, `prompt`, `keyframes`
(`IMAGE@K` or `auto@K`, `;`-separated in CSV, a list or that text in YAML), `output` (a file name under
`WORK/outputs/`) and `settings` (`key=value`, space-separated in CSV, a list or that text in YAML). Paths are
relative to the jobs file's folder. Every problem is one line naming the row and the field.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

import yaml

from ..config import KeyframeSpec
from ..edit_checks import EDIT_SUFFIXES, check_keyframe_specs
from ..errors import UserError
from ..io.paths import leaves_folder
from ..io.video import check_input
from .spec import JobSpec

FIELDS = ("clip", "prompt", "keyframes", "output", "settings")
REQUIRED = ("clip", "prompt", "output")


class RowError(UserError):
    """A row of the jobs file that cannot run, with the row and the field named."""

    def __init__(self, source: Path, row: int, field: str, message: str):
        super().__init__(f"{source} row {row}, {field}: {message}")


def read_jobs_file(path: str | Path, model: str | None = None) -> list[JobSpec]:
    """Every job of the file, each row checked (fields, clip, keyframe images, settings), in order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"jobs file {path} does not exist: give a YAML list of jobs or a CSV with the columns "
                        f"{', '.join(FIELDS)}")
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_yaml(path)
    if not rows:
        raise UserError(f"jobs file {path} lists no jobs")
    specs = [_row_spec(path, number, row, model) for number, row in enumerate(rows, 1)]
    seen: dict[str, int] = {}
    for number, spec in enumerate(specs, 1):
        if spec.output in seen:
            raise RowError(path, number, "output", f"{spec.output} is also row {seen[spec.output]}'s output: give "
                           "each job an output of its own")
        seen[spec.output] = number
    return specs


def _read_yaml(path: Path) -> list[dict]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"jobs file {path} is not readable YAML ({str(error).splitlines()[0]}): write a list of "
                        f"mappings with the keys {', '.join(FIELDS)}, or a CSV") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UserError(f"jobs file {path} must be a YAML list of mappings (keys {', '.join(FIELDS)})")
    return data


def _read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"jobs file {path} is not a readable CSV ({error})") from None
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        raise UserError(f"jobs file {path}: unknown column {unknown[0]!r}; the columns are {', '.join(FIELDS)}")
    # csv's row of extra cells (more cells than columns) lands under the key None
    for number, row in enumerate(rows, 1):
        if None in row:
            raise RowError(path, number, "columns", f"has more cells than the header's {len(columns)} columns")
    return rows


def _row_spec(source: Path, number: int, row: dict, model: str | None) -> JobSpec:
    def fail(field: str, message: str) -> RowError:
        return RowError(source, number, field, message)

    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        raise fail(str(unknown[0]), f"unknown field; the fields are {', '.join(FIELDS)}")
    for field in REQUIRED:
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise fail(field, "missing: every job needs a clip, a prompt and an output name")
    folder = source.parent
    clip = folder / row["clip"].strip()
    try:
        check_input(clip)
    except UserError as error:
        raise fail("clip", str(error)) from None
    output = row["output"].strip()
    if leaves_folder(output) or Path(output).suffix.lower() not in EDIT_SUFFIXES:
        raise fail("output", f"{output!r} must be a file name ending in .mp4 inside the work folder's outputs/ "
                   "(no absolute path, ~ or ..)")
    keyframes = _keyframes(row.get("keyframes"), folder, fail)
    settings = _words(row.get("settings"), "settings", fail, shlex.split)
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise fail("settings", f"{bad[0]!r} is not KEY=VALUE, e.g. sampling.seed=3")
    spec = JobSpec(input=str(clip.resolve()), prompt=row["prompt"].strip(), output=output, keyframes=keyframes,
                   settings=tuple(settings), model=model)
    try:
        spec.config()
    except UserError as error:
        raise fail("settings", str(error)) from None
    return spec


def _keyframes(value, folder: Path, fail) -> tuple[str, ...]:
    texts = _words(value, "keyframes", fail, lambda text: [t.strip() for t in text.split(";") if t.strip()])
    resolved = []
    try:
        for text in texts:
            spec = KeyframeSpec.parse(text)
            if not spec.is_auto:
                where = "@match" if spec.match else "" if spec.index is None else f"@{spec.index}"
                text = f"{(folder / spec.source).resolve()}{where}"
            resolved.append(text)
        check_keyframe_specs([KeyframeSpec.parse(t) for t in resolved])
    except UserError as error:
        raise fail("keyframes", str(error)) from None
    return tuple(resolved)


def _words(value, field: str, fail, split) -> list[str]:
    """A field that holds several entries: a list, or text split the CSV way."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    if isinstance(value, str):
        try:
            return split(value)
        except ValueError as error:
            raise fail(field, f"cannot be read ({error})") from None
    raise fail(field, "must be text or a list of text")
