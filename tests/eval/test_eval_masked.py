"""The masked evaluation example, `ccedit eval configs/eval/masked.yaml`: the benchmark item carries a mask file,
ccedit edits inside it, and the locality metrics receive it and find nothing changed outside."""

import json

import pytest

from ccedit.cli import main
from tests.conftest import REPO

CONFIG = "configs/eval/masked.yaml"


def scores(output) -> dict:
    rows = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    return rows[0]["scores"]


@pytest.fixture
def in_checkout(monkeypatch):
    monkeypatch.chdir(REPO)  # the example's paths are relative to the checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_masked_example_changes_nothing_outside_its_mask(tmp_path, in_checkout):
    assert main(["eval", CONFIG, f"output={tmp_path / 'masked'}", "--no-progress"]) == 0
    masked = scores(tmp_path / "masked")
    assert masked["locality_changed"] == 0.0
    assert masked["locality_psnr"] is None  # infinite: nothing changed outside (JSON holds it as null)
    assert masked["locality_ssim"] == pytest.approx(1.0)
    assert masked["clip_text"] is not None

    # The same edit without the item's mask changes the frame everywhere; the metrics see the same region.
    assert main(["eval", CONFIG, f"output={tmp_path / 'whole'}", "--no-progress",
                 "methods=[{name: ccedit-tiny-region, type: ccedit, options: {overrides: [model.path=tiny, "
                 "sampling.num_inference_steps=1, structure.cache_dir=null, mask.spec=assets/masks/kitten.png, "
                 "mask.invert=true]}}]"]) == 0
    inverted = scores(tmp_path / "whole")
    assert inverted["locality_changed"] > 0.5 and inverted["locality_psnr"] < 30
