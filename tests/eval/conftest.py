"""A small evaluation made in the test itself: frame folders of random PNGs, a BalanceCC JSON naming them, and the
clips themselves scored as a results folder by one tiny metric, so these tests need no data from outside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image


@dataclass
class GeneratedEval:
    root: Path
    videos: Path
    benchmark: Path
    output: Path

    def config(self, **changes) -> str:
        """An evaluation config over the generated benchmark (top-level sections replaced by `changes`)."""
        config = {
            "output": str(self.output),
            "benchmark": {"path": str(self.benchmark), "videos": str(self.videos)},
            "video": {"num_frames": 2, "height": 32, "width": 32},
            "methods": [{"name": "source", "type": "folder", "options": {"root": str(self.videos),
                                                                          "pattern": "{video}"}}],
            "metrics": {"clip_frame": {"model": "tiny"}},
        }
        config.update(changes)
        path = self.root / "eval.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in (self.output / "results.jsonl").read_text().splitlines()]


def write_frames(folder: Path, count: int = 2, size: int = 32, seed: int = 0) -> Path:
    """A frame folder of `count` random RGB PNGs."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def balancecc(videos: dict[str, list[tuple[str, str]]]) -> list[dict]:
    """A BalanceCC benchmark: video name -> [(editing type, target prompt)]."""
    return [{"Video Name": name, "Video Type": "Test", "Original Prompt": f"a clip called {name}",
             "Editing": [{"Editing Type": kind, "Target Prompt": prompt, "Fantasy Level": 1}
                         for kind, prompt in edits]}
            for name, edits in videos.items()]


@pytest.fixture
def generated_eval(tmp_path) -> GeneratedEval:
    videos = tmp_path / "videos"
    write_frames(videos / "red", seed=1)
    write_frames(videos / "blue", seed=2)
    benchmark = tmp_path / "bench.json"
    benchmark.write_text(json.dumps(balancecc({
        "red": [("Style Change", "a red watercolour"), ("Object Change", "a red car")],
        "blue": [("Style Change", "a blue sketch")],
    })))
    return GeneratedEval(tmp_path, videos, benchmark, tmp_path / "out")
