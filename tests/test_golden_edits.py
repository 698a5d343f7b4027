"""Golden edits: fixed-seed tiny edits of each model kind whose frames and settings are pinned.

A refactor must leave every one of them byte for byte as it was. The frames are pinned by the SHA-256 of the
lossless PNG frames an edit writes (`output.frames=true`), with each frame's mean for a readable failure; the
settings by the sidecar's resolved config, prior, keyframes, video and windows. After a change that is meant to
change results, regenerate with `CCEDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_edits.py` and say why
in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ccedit.cli import main
from ccedit.io import read_image, write_image
from tests.conditioning import write_moving_disk_clip

GOLDEN = Path(__file__).parent / "golden" / "edits.json"
UPDATE = os.environ.get("CCEDIT_UPDATE_GOLDEN") == "1"
MODELS = ("tiny", "animatediff-tiny")
CASES = {
    "text": ["--frames", "6"],
    "keyframe": ["--frames", "6", "--keyframe", "{keyframe}@1"],
    "windowed": ["--frames", "12", "--window", "6", "--overlap", "2", "--keyframe", "{keyframe}@4"],
    "pad": ["--frames", "6", "video.resize_mode=pad"],
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = write_moving_disk_clip(tmp_path_factory.mktemp("clip"), num_frames=12)
    keyframe = folder.parent / "keyframe.png"
    write_image(keyframe, 255 - read_image(folder / "0001.png"))  # an 'edited' frame unlike any source frame
    return folder, keyframe


def pinned(sidecar: dict) -> dict:
    """The sidecar's settings that decide a result (paths and measurements left out)."""
    config = json.loads(json.dumps(sidecar["config"]))
    config["structure"].pop("cache_dir")
    return {"config": config, "prior": sidecar["prior"], "keyframes": [k["index"] for k in sidecar["keyframes"]],
            "video": {k: v for k, v in sidecar["video"].items()}, "windows": sidecar["windows"]}


def run_case(tmp_path, clip, model: str, case: str) -> dict:
    folder, keyframe = clip
    out = tmp_path / "o.mp4"
    args = [a.format(keyframe=keyframe) for a in CASES[case]]
    assert main(["edit", str(folder), "--prompt", "a red car", "-o", str(out), "--model", model, "--steps", "2",
                 "--height", "64", "--width", "64", "--seed", "11", "output.frames=true", "structure.cache_dir=null",
                 "model.cpu_tuning=true",  # pinned with the CPU tuning that was on by default then
                 *args]) == 0
    frames = np.stack([read_image(p) for p in sorted((tmp_path / "o_frames").glob("*.png"))])
    return {"shape": list(frames.shape), "sha256": hashlib.sha256(frames.tobytes()).hexdigest(),
            "frame_means": [round(float(f.mean()), 3) for f in frames],
            "sidecar": pinned(json.loads((tmp_path / "o.mp4.json").read_text()))}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", MODELS)
def test_a_golden_edit_is_unchanged(tmp_path, clip, model, case):
    result = run_case(tmp_path, clip, model, case)
    key = f"{model}/{case}"
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if UPDATE:
        golden[key] = result
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert key in golden, f"no golden result for {key}: run with CCEDIT_UPDATE_GOLDEN=1"
    expected = golden[key]
    assert result["sidecar"] == expected["sidecar"]
    assert result["shape"] == expected["shape"]
    assert result["sha256"] == expected["sha256"], (
        f"the frames changed (per-frame means {result['frame_means']}, golden {expected['frame_means']})")
