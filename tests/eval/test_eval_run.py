"""The acceptance run: `ccedit eval configs/eval/tiny.yaml output=DIR` as is, resumed, on two processes, and its
report in a real headless Chromium."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

CONFIG = "configs/eval/tiny.yaml"
METRICS = ["clip_text", "clip_frame", "clip_frame_consecutive", "pickscore", "edit_success", "warp_error",
           "structure_mse"]
# One thread in every process, so the one- and two-process runs add floats in the same order.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_cli(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, time.perf_counter() - started


def rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("eval") / "tiny"
    done, seconds = run_cli([sys.executable, "-m", "ccedit", "eval", CONFIG, f"output={output}", "--no-progress"])
    return output, seconds, done.stdout


def test_the_tiny_config_writes_rows_tables_and_report(first_run):
    output, seconds, stdout = first_run
    print(f"first run: {seconds:.1f} s")
    assert "evaluated 8 edits, 0 already done" in stdout
    found = rows(output)
    assert len(found) == 8 and all(r["status"] == "ok" for r in found)
    assert {r["method"] for r in found} == {"ccedit-tiny", "source"}
    assert {r["item"] for r in found} == {"kitten/0", "kitten/3", "sailboat/0", "sailboat/3"}
    for r in found:
        assert sorted(r["scores"]) == sorted(METRICS) and all(isinstance(v, float) for v in r["scores"].values())
        assert r["metrics"]["clip_text"]["higher_is_better"] and not r["metrics"]["warp_error"]["higher_is_better"]
        assert r["num_frames"] == 3 and r["size"] == [64, 64] and (output / r["media"]).is_file()
    # The do-nothing baseline keeps the source's structure exactly; the edit does not.
    source = {r["item"]: r for r in found if r["method"] == "source"}
    edited = {r["item"]: r for r in found if r["method"] == "ccedit-tiny"}
    assert all(r["scores"]["structure_mse"] == 0 for r in source.values())
    assert all(r["scores"]["structure_mse"] > 0 for r in edited.values())
    assert all(r["cost"]["seconds_per_frame"] > 0 for r in edited.values())
    assert all(r["cost"]["seconds_per_frame"] is None for r in source.values())

    summary = (output / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    assert header[:6] == ["method", "editing_type", "video_type", "fantasy_level", "items", "failed"]
    assert header[6:] == [*METRICS, "seconds_per_frame"]
    lines = [dict(zip(header, line.split(","))) for line in summary[1:]]
    overall = [line for line in lines if line["editing_type"] == "all"]
    assert [line["method"] for line in overall] == ["ccedit-tiny", "source"] and overall[0]["items"] == "4"
    mean = np.mean([r["scores"]["clip_text"] for r in edited.values()])
    assert float(overall[0]["clip_text"]) == pytest.approx(mean)
    groups = {(line["method"], line["editing_type"], line["video_type"], line["fantasy_level"]) for line in lines}
    assert ("ccedit-tiny", "Style Change", "Animal", "1") in groups
    assert ("source", "Multiple Change", "Landscape", "3") in groups
    markdown = (output / "summary.md").read_text()
    assert markdown.startswith("| method | editing_type |") and markdown.count("\n") == len(summary) + 1


def test_a_second_run_redoes_no_edit_and_no_metric(first_run, monkeypatch, capsys):
    from ccedit.cli import main
    from ccedit.methods.ccedit_method import CCEditMethod
    from ccedit.methods.folder import ResultsFolderMethod
    from ccedit.metrics.base import Metric

    output, first_seconds, _ = first_run
    before = (output / "results.jsonl").read_bytes()
    calls = []
    for cls in (CCEditMethod, ResultsFolderMethod):
        monkeypatch.setattr(cls, "run", lambda *a, **k: calls.append("edit"))
    monkeypatch.setattr(Metric, "__call__", lambda *a, **k: calls.append("metric"))
    monkeypatch.chdir(REPO)
    import ccedit.pipelines.pipeline_ccedit  # noqa: F401 - imported before the clock starts, as the first run's
    # process start is not the work being compared either way

    started = time.perf_counter()
    assert main(["eval", CONFIG, f"output={output}", "--no-progress"]) == 0
    seconds = time.perf_counter() - started
    print(f"first run: {first_seconds:.1f} s, second run: {seconds:.1f} s")
    assert calls == []
    assert "evaluated 0 edits, 8 already done" in capsys.readouterr().out
    assert (output / "results.jsonl").read_bytes() == before
    assert seconds < first_seconds / 3


@pytest.mark.slow  # a launch of two processes: the README's `accelerate launch ... eval` command
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")
def test_two_processes_give_the_rows_of_one(first_run, tmp_path):
    output, _, _ = first_run
    # `--multi_gpu` selects accelerate's torchrun launcher, which also starts CPU processes (they join over gloo);
    # `--cpu` alone would start one process unless MPI is installed.
    launch = [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ccedit"]
    two = tmp_path / "two"
    done, seconds = run_cli([*launch, "eval", CONFIG, f"output={two}", "--no-progress"])
    print(f"two processes: {seconds:.1f} s")
    assert not list(two.glob("results.part*"))  # merged
    one_rows = {r["key"]: r for r in rows(output)}
    two_rows = {r["key"]: r for r in rows(two)}
    assert one_rows.keys() == two_rows.keys() and len(two_rows) == 8
    for key, a in one_rows.items():
        b = two_rows[key]
        assert {k: v for k, v in a.items() if k not in ("cost", "scores")} == \
            {k: v for k, v in b.items() if k not in ("cost", "scores")}
        for metric, value in a["scores"].items():
            assert b["scores"][metric] == pytest.approx(value, rel=1e-5, abs=1e-7), (a["item"], a["method"], metric)
    assert (two / "summary.csv").read_text().splitlines()[0] == (output / "summary.csv").read_text().splitlines()[0]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine: install it (apt-get install -y chromium) to test the report in a browser")


def test_the_report_opens_in_chromium_with_every_clip_plot_and_item(first_run, tmp_path):
    output, _, _ = first_run
    browser = chromium()
    page = (output / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    # The same width for the DOM dump and the screenshot, so the items lie at the same places in both.
    dom = subprocess.run([browser, *flags, "--window-size=1280,800", "--dump-dom", page], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    status = re.search(r'id="media-status" data-loaded="(\d+)" data-failed="(\d+)">(\d+) of (\d+)', dom.stdout)
    assert status, dom.stdout[:2000]
    loaded, failed, _, total = map(int, status.groups())
    # per item the source, its structure and one clip per method; one plot per metric
    expected = 4 * (2 + 2) + len(METRICS)
    assert (loaded, failed, total) == (expected, 0, expected)
    items = re.findall(r'data-item="([^"]+)" data-top="(\d+)" data-bottom="(\d+)"', dom.stdout)
    assert sorted(i for i, _, _ in items) == ["kitten/0", "kitten/3", "sailboat/0", "sailboat/3"]
    height = int(re.search(r'<body data-height="(\d+)"', dom.stdout).group(1))

    shot = tmp_path / "report.png"
    done = subprocess.run([browser, *flags, f"--window-size=1280,{height}", f"--screenshot={shot}", page],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert image.shape[0] >= max(int(bottom) for _, _, bottom in items)
    for item, top, bottom in items:
        band = image[int(top):int(bottom)]
        # Each item's band shows its clips, not blank page: the clips are photographs, edge maps and noise.
        assert band.std() > 20 and (band.mean(axis=2) < 128).mean() > 0.05, item
