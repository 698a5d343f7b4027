"""A clone of the repository alone runs the tests and the examples: every clip, keyframe and benchmark sheet they read
is inside it, small, and has its source and licence noted."""

import re
import subprocess

import pytest

from ccedit.eval.benchmark import read_benchmark, video_path
from ccedit.eval.config import load_eval_config
from tests.conftest import ASSETS, BALANCECC, KEYFRAME, REPO, VIDEOS

EVAL_CONFIGS = sorted((REPO / "configs" / "eval").glob("*.yaml"))


def inside_repository(path) -> bool:
    return (REPO / path).resolve().is_relative_to(REPO)


def test_the_test_data_is_inside_the_repository():
    for path in (VIDEOS, KEYFRAME, BALANCECC):
        assert inside_repository(path), f"{path} is outside the repository"
    for clip in ("kitten.mp4", "car-turn.mp4", "sailboat.mp4", "ballet-portrait.mp4"):
        assert (VIDEOS / clip).is_file(), clip
    assert KEYFRAME.is_file() and BALANCECC.is_file()


@pytest.mark.parametrize("config_path", EVAL_CONFIGS, ids=lambda path: path.name)
def test_the_eval_examples_read_their_benchmark_and_clips_from_the_repository(config_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples are run from the checkout; their paths are relative to it
    config = load_eval_config(config_path)
    assert inside_repository(config.benchmark.path) and inside_repository(config.benchmark.videos)
    items = read_benchmark(config.benchmark)
    assert items
    for item in items:
        clip = video_path(config.benchmark.videos, item.video)
        assert clip.is_file() and inside_repository(clip), clip
    for method in config.methods:
        if method.type == "folder":
            assert inside_repository(method.options["root"]), method.name


def test_the_assets_are_small_and_each_has_its_source_and_licence_noted():
    listed = (ASSETS / "README.md").read_text()
    files = [path for path in ASSETS.rglob("*") if path.is_file() and path.name != "README.md"]
    sizes = {path.relative_to(ASSETS).as_posix(): path.stat().st_size for path in files}
    assert max(sizes.values()) < 1 << 20 and sum(sizes.values()) < 2 << 20, sizes
    for name in sizes:
        row = re.search(rf"^\| `{re.escape(name)}` \|(.*)$", listed, flags=re.M)
        assert row, f"{name} has no row in assets/README.md"
        source, licence = [cell.strip() for cell in row.group(1).split("|")][-3:-1]
        assert source and licence, name


def test_the_assets_are_committed():
    tracked = subprocess.run(["git", "ls-files", "assets"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    names = {line.split("/", 1)[1] for line in tracked.stdout.splitlines()}
    present = {path.relative_to(ASSETS).as_posix() for path in ASSETS.rglob("*") if path.is_file()}
    assert present <= names  # a file the tests read but a clone would not have
