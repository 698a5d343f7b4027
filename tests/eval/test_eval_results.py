"""Results rows: a line torn by a killed run is dropped, finished rows win over failed ones, merging is one file."""

import json

from ccedit.eval import results as store


def row(key: str, status: str, **extra) -> dict:
    """A results row as the runner writes it (only such rows are read back)."""
    return {"key": key, "method": "m", "item": "v/0", "video": "v", "edit": 0, "editing_type": "Style",
            "video_type": "", "fantasy_level": None, "source_prompt": "a", "target_prompt": "b", "status": status,
            "error": None if status == "ok" else "broken", "scores": {}, "metrics": {},
            "media": "media/v/0/m.mp4" if status == "ok" else None, "cost": {}, **extra}


def test_a_torn_last_line_is_cut_and_the_finished_rows_stay(tmp_path):
    path = tmp_path / store.RESULTS
    path.write_text(json.dumps(row("a", "ok")) + "\n" + '{"key": "b", "sta')  # killed mid-write
    assert [r["key"] for r in store.read_rows(tmp_path)] == ["a"]
    store.RowWriter(path).append(row("b", "ok"))
    assert [r["key"] for r in store.read_rows(tmp_path)] == ["a", "b"]


def test_merging_keeps_one_row_per_key_and_never_a_failure_over_a_result(tmp_path):
    store.RowWriter(tmp_path / store.RESULTS).append(row("a", "ok", n=1))
    part = store.RowWriter(tmp_path / store.part_name(1))
    part.append(row("a", "failed", n=2))
    part.append(row("b", "failed", n=3))
    part.append(row("b", "ok", n=4))
    merged = store.merge(tmp_path)
    assert sorted((r["key"], r["n"]) for r in merged) == [("a", 1), ("b", 4)]
    assert not list(tmp_path.glob("results.part*")) and len(store.read_rows(tmp_path)) == 2
