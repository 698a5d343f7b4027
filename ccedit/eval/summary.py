"""Tables of an evaluation: mean scores by method x editing type x video type x fantasy level, CSV and Markdown.

Each method also gets an overall row (`all` in the grouping columns). Scores a metric could not give (keyframe
metrics on edits without keyframes) are left out of the means; `items` counts finished edits, `failed` the others.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from ..io import atomic_path

GROUPS = ("method", "editing_type", "video_type", "fantasy_level")
ALL = "all"


def summary_rows(rows: list[dict], metrics: list[str]) -> list[dict]:
    """One row per method overall, then per (method, editing type, video type, fantasy level)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], ALL, ALL, ALL)].append(r)
        groups[tuple(_cell(r[g]) for g in GROUPS)].append(r)
    ordered = sorted(groups, key=lambda g: (methods.index(g[0]), g[1:] != (ALL, ALL, ALL), tuple(map(str, g[1:]))))
    table = []
    for key in ordered:
        members = groups[key]
        done = [r for r in members if r["status"] == "ok"]
        line = dict(zip(GROUPS, key), items=len(done), failed=len(members) - len(done))
        for name in [*metrics, "seconds_per_frame"]:
            values = [r["scores"].get(name) if name != "seconds_per_frame" else r["cost"].get(name) for r in done]
            values = [v for v in values if v is not None]
            line[name] = sum(values) / len(values) if values else None
        table.append(line)
    return table


def _cell(value) -> str:
    return "" if value is None else str(value)


def write_summary(output: Path, rows: list[dict], metrics: list[str]) -> list[dict]:
    table = summary_rows(rows, metrics)
    columns = [*GROUPS, "items", "failed", *metrics, "seconds_per_frame"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in line.items()} for line in table)
    with atomic_path(output / "summary.csv") as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    with atomic_path(output / "summary.md") as tmp:
        tmp.write_text(markdown_table(table, columns), encoding="utf-8")
    return table


def markdown_table(table: list[dict], columns: list[str]) -> str:
    """A GitHub-flavoured Markdown table; numbers to 4 significant digits, `-` where there is none."""
    def cell(value) -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(line.get(c)) for c in columns) + " |" for line in table]
    return "\n".join(lines) + "\n"
