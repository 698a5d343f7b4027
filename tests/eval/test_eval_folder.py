"""An evaluation folder over several runs: the tables and the report cover every row in it, a damaged row is done
again and never trusted, and a folder or name the file system cannot take is one line."""

import csv
import json
import logging

import pytest

from ccedit.cli import main
from ccedit.methods.folder import ResultsFolderMethod


def one_error_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def summary(output) -> dict[str, dict]:
    with (output / "summary.csv").open() as f:
        return {(line["method"], line["editing_type"]): line for line in csv.DictReader(f)}


def count_runs(monkeypatch) -> list[str]:
    """The items the results-folder method is run on, in order."""
    ran = []
    original = ResultsFolderMethod.run

    def run(self, job, fields):
        ran.append(f"{fields['video']}/{fields['edit']}")
        return original(self, job, fields)

    monkeypatch.setattr(ResultsFolderMethod, "run", run)
    return ran


def test_a_narrower_rerun_keeps_every_row_of_the_folder_in_the_tables_and_the_report(generated_eval, capsys):
    config = generated_eval.config()
    assert main(["eval", config, "--no-progress"]) == 0
    assert main(["eval", config, "--no-progress", "benchmark.include=[blue]"]) == 0
    assert "evaluated 0 edits, 1 already done" in capsys.readouterr().out
    table = summary(generated_eval.output)
    assert table[("source", "all")]["items"] == "3"
    assert table[("source", "Object Change")]["items"] == "1"  # red's, which this run did not select
    assert (generated_eval.output / "summary.md").read_text().count("| source | all |") == 1
    report = (generated_eval.output / "report.html").read_text()
    assert all(f'data-item="{item}"' in report for item in ("red/0", "red/1", "blue/0"))
    assert "This run selected 1 of these rows" in report


def test_a_missing_video_shows_its_error_and_no_clip(generated_eval, capsys):
    data = json.loads(generated_eval.benchmark.read_text())
    data.append({**data[1], "Video Name": "ghost"})
    generated_eval.benchmark.write_text(json.dumps(data))
    assert main(["eval", generated_eval.config(), "--no-progress"]) == 1
    assert "1 failed" in capsys.readouterr().out
    report = (generated_eval.output / "report.html").read_text()
    section = report[report.index('data-item="ghost/0"'):]
    section = section[: section.index("</section>")]
    assert "media/ghost" not in section and "<video" not in section
    assert "no clip:" in section and "ghost.mp4" in section  # the reading error, which names the file
    assert "media/red/source.mp4" in report


def test_a_changed_setting_is_named_by_its_key(generated_eval, capsys):
    assert main(["eval", generated_eval.config(), "--no-progress"]) == 0
    assert main(["eval", generated_eval.config(), "--no-progress", "video.num_frames=1"]) == 2
    line = one_error_line(capsys)
    assert "holds results of a different evaluation (its eval.json has other video.num_frames)" in line


def damaged_lines(row: dict) -> list[bytes]:
    """Lines a results file may hold that are not rows: not UTF-8, not an object, missing keys, nested deeper than
    Python's parser goes, and the given row with its scores and its media path made untrustworthy."""
    missing = {k: v for k, v in row.items() if k != "scores"}
    outside = {**row, "media": "../../elsewhere.mp4"}
    return [b'{"key": "\xff\xfe"}', b"[1, 2, 3]", b'"just text"', b'{"key": "abc"}',
            b"[" * 100_000 + b"]" * 100_000, json.dumps(missing).encode(), json.dumps(outside).encode()]


def test_damaged_results_rows_are_skipped_with_a_warning_and_done_again(generated_eval, monkeypatch, caplog):
    assert main(["eval", generated_eval.config(), "--no-progress"]) == 0
    results = generated_eval.output / "results.jsonl"
    rows = generated_eval.rows()
    redone = next(r for r in rows if r["item"] == "blue/0")
    kept = [r for r in rows if r is not redone]
    lines = [json.dumps(r).encode() for r in kept] + damaged_lines(redone)
    results.write_bytes(b"\n".join(lines) + b"\n")
    ran = count_runs(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert main(["eval", generated_eval.config(), "--no-progress"]) == 0
    assert ran == ["blue/0"]  # the damaged rows stood for it: done again, the others skipped
    warnings = [r.getMessage() for r in caplog.records if "is not a results row" in r.getMessage()]
    assert len(warnings) == len(damaged_lines(redone))
    assert any("not UTF-8" in w for w in warnings) and any("nested too deeply" in w for w in warnings)
    after = generated_eval.rows()
    assert sorted(r["item"] for r in after) == ["blue/0", "red/0", "red/1"]
    assert all(r["status"] == "ok" and r["media"].startswith("media/") for r in after)


def test_a_video_name_longer_than_a_file_name_may_be_is_one_line(generated_eval, capsys):
    data = json.loads(generated_eval.benchmark.read_text())
    data[0]["Video Name"] = "v" * 300
    generated_eval.benchmark.write_text(json.dumps(data))
    assert main(["eval", generated_eval.config(), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert f"{'v' * 300}/0" in line and "300 bytes long" in line
    assert not generated_eval.output.exists()


@pytest.mark.parametrize("where", ["under a file", "name too long"])
def test_an_output_folder_that_cannot_be_made_is_one_line(generated_eval, capsys, where):
    blocker = generated_eval.root / "a-file"
    blocker.write_text("not a folder")
    output = blocker / "out" if where == "under a file" else generated_eval.root / ("o" * 300) / "out"
    assert main(["eval", generated_eval.config(), "--no-progress", f"output={output}"]) == 2
    assert "cannot create the output folder" in one_error_line(capsys)


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="permissions do not bind root")
def test_an_output_in_a_read_only_folder_is_one_line(generated_eval, capsys):
    locked = generated_eval.root / "locked"
    locked.mkdir(mode=0o555)
    assert main(["eval", generated_eval.config(), "--no-progress", f"output={locked / 'out'}"]) == 2
    assert "cannot write in" in one_error_line(capsys)


@pytest.mark.parametrize("metrics, expected", [
    ({"clip_frame": {"model": "tiny", "device": ["cpu"]}}, "metric 'clip_frame': option device must be str"),
    ({"structure_mse": {"annotator": "canny", "annotator_options": ["a", "b"]}},
     "metric 'structure_mse': option annotator_options must be dict"),
    ({"clip_frame": {"model": "tiny", "batch_size": {"a": 1}}}, "option batch_size must be int"),
])
def test_a_list_or_mapping_in_place_of_the_other_in_metric_options_is_one_line(generated_eval, capsys, metrics,
                                                                               expected):
    assert main(["eval", generated_eval.config(metrics=metrics), "--no-progress"]) == 2
    assert expected in one_error_line(capsys)


def test_option_keys_of_mixed_types_are_one_line_naming_the_key(generated_eval, capsys):
    methods = [{"name": "baseline", "type": "animatediff",
                "options": {"tiny": True, "annotator_options": {1: "x", "low_threshold": 50}}}]
    assert main(["eval", generated_eval.config(methods=methods), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "methods[0] (baseline): options.annotator_options has the key 1 (int)" in line
