"""`ccedit eval configs/eval/wan_vace.yaml`: ccedit's Wan-VACE kind and diffusers' WanVACEPipeline (the `wan_vace`
baseline) on the same items, offline on the tiny random Wan2.1-VACE."""

import json

import yaml

from ccedit.cli import main
from tests.conftest import REPO

CONFIG = "configs/eval/wan_vace.yaml"


def test_the_wan_vace_example_scores_each_method_on_each_item(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the example's paths are relative to the checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = yaml.safe_load((REPO / CONFIG).read_text())
    methods = {m["name"]: m for m in config["methods"]}
    assert {m["type"] for m in methods.values()} == {"ccedit", "wan_vace"}
    ccedit_kind = next(m for m in methods.values() if m["type"] == "ccedit")
    assert "model.path=wan-vace-tiny" in ccedit_kind["options"]["overrides"]
    assert main(["eval", CONFIG, f"output={tmp_path / 'out'}", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    items = {r["item"] for r in rows}
    assert len(items) == 2
    assert sorted((r["method"], r["item"]) for r in rows) == sorted((m, i) for m in methods for i in items)
    video = config["video"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["num_frames"] == video["num_frames"] and r["size"] == [video["height"], video["width"]]
        assert all(isinstance(r["scores"][m], float) for m in config["metrics"])
