"""Benchmark sheets as their authors publish them: the LOVEU-TGVE 2023 sheet (edit columns named by type alone,
beside metadata columns) in CSV and in JSON, read without renaming a column."""

import csv
import json

import pytest

from ccedit.cli import main
from ccedit.errors import UserError
from ccedit.eval.benchmark import read_benchmark
from ccedit.eval.config import BenchmarkConfig

COLUMNS = ["video_name", "num_frames", "subset", "caption", "style", "object", "background", "multiple"]
SHEET = [
    {"video_name": "red", "num_frames": 32, "subset": "DAVIS", "caption": "a red square",
     "style": "a red square, watercolour", "object": "a red circle", "background": "a red square on a beach",
     "multiple": "a red circle on a beach, watercolour"},
    {"video_name": "blue", "num_frames": 48, "subset": "videvo", "caption": "a blue square",
     "style": "a blue square, pencil sketch", "object": "", "background": None, "multiple": "a blue circle in snow"},
]
PUBLISHED = {"video_column": "video_name", "source_column": "caption", "edit_suffix": ""}


def write_sheet(folder, form: str):
    if form == "csv":
        path = folder / "loveu.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in SHEET)
    elif form == "json rows":
        path = folder / "loveu.json"
        path.write_text(json.dumps(SHEET))
    else:  # pandas' DataFrame.to_json(): an object of columns, each an object of values by row
        path = folder / "loveu.json"
        path.write_text(json.dumps({c: {str(i): row[c] for i, row in enumerate(SHEET)} for c in COLUMNS}))
    return path


@pytest.mark.parametrize("form", ["csv", "json rows", "json columns"])
def test_the_published_loveu_sheet_gives_one_item_per_edit_typed_by_its_column(tmp_path, form):
    path = write_sheet(tmp_path, form)
    fmt = "loveu_csv" if form == "csv" else "loveu_json"
    items = read_benchmark(BenchmarkConfig(format=fmt, path=str(path), videos="v", **PUBLISHED))
    assert [(i.video, i.editing_type, i.target_prompt) for i in items] == [
        ("red", "style", "a red square, watercolour"), ("red", "object", "a red circle"),
        ("red", "background", "a red square on a beach"), ("red", "multiple", "a red circle on a beach, watercolour"),
        ("blue", "style", "a blue square, pencil sketch"), ("blue", "multiple", "a blue circle in snow")]
    assert {i.source_prompt for i in items if i.video == "red"} == {"a red square"}
    chosen = read_benchmark(BenchmarkConfig(format=fmt, path=str(path), videos="v", editing_types=["multiple"],
                                            **PUBLISHED))
    assert [i.id for i in chosen] == ["red/3", "blue/3"]


def test_the_published_sheet_runs_through_ccedit_eval(generated_eval, capsys):
    sheet = write_sheet(generated_eval.root, "csv")
    benchmark = {"format": "loveu_csv", "path": str(sheet), "videos": str(generated_eval.videos),
                 "editing_types": ["style", "background"], **PUBLISHED}
    assert main(["eval", generated_eval.config(benchmark=benchmark), "--no-progress"]) == 0
    assert "evaluated 3 edits" in capsys.readouterr().out
    assert sorted((r["item"], r["editing_type"]) for r in generated_eval.rows()) == [
        ("blue/0", "style"), ("red/0", "style"), ("red/2", "background")]


def test_a_sheet_without_edit_columns_says_which_it_looked_for(tmp_path):
    path = tmp_path / "loveu.csv"
    path.write_text("video_name,caption,num_frames\nred,a red square,32\n")
    with pytest.raises(UserError, match="has no edit columns named style, object, background, multiple"):
        read_benchmark(BenchmarkConfig(format="loveu_csv", path=str(path), videos="v", **PUBLISHED))
    path = tmp_path / "loveu.json"
    path.write_text(json.dumps([{"video_name": "red", "caption": "a red square", "style": ["not", "text"]}]))
    with pytest.raises(UserError, match="row 1, column 'style' holds a JSON list"):
        read_benchmark(BenchmarkConfig(format="loveu_json", path=str(path), videos="v", **PUBLISHED))
