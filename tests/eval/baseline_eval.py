"""Running a diffusers baseline through `ccedit eval` on two kitten edits, shared by the baselines' tests."""

import json

import yaml

from ccedit.cli import main
from tests.conftest import BALANCECC, VIDEOS



def check_baseline_rows(tmp_path, name: str, method_type: str, options: dict, video: dict) -> None:
    """Evaluate method `method_type` with `options` over two kitten edits; every row must be scored, and sized and
    costed as `video` asks."""
    data = [v for v in json.loads(BALANCECC.read_text()) if v["Video Name"] == "kitten"]
    data[0]["Editing"] = data[0]["Editing"][:2]
    (tmp_path / "bench.json").write_text(json.dumps(data))
    config = {
        "output": str(tmp_path / "out"),
        "benchmark": {"path": str(tmp_path / "bench.json"), "videos": str(VIDEOS)},
        "video": video,
        "methods": [{"name": name, "type": method_type, "options": options}],
        "metrics": {"clip_text": {"model": "tiny"}, "structure_mse": {"annotator": "canny"}},
        "report": {"structure": "canny"},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert main(["eval", str(tmp_path / "eval.yaml"), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r["method"] for r in rows} == {name}
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert all(isinstance(r["scores"][m], float) for m in ("clip_text", "structure_mse"))
        size = [video["height"], video["width"]]
        assert r["num_frames"] == video["num_frames"] and r["size"] == size and r["cost"]["seconds_per_frame"] > 0
    assert (tmp_path / "out" / "summary.csv").read_text().count(name) >= 1
