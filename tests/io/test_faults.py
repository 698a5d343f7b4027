"""Faults injected into real runs: a full or read-only disk, signals at each phase, concurrent runs, convert onto a
folder it did not write. Each leaves the complete old outputs or the complete new ones, never a mix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ccedit.outputs
from ccedit.cli import main
from tests.conftest import REFERENCE, VIDEOS, fill_disk, require

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1", "--structure", "canny"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


def _edit(kitten, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, f"structure.cache_dir={cache}", "output.gif=true", *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every visible output file's bytes, hidden entries (temporaries, staging) reported by name."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(folder))] = path.read_bytes()
    return files


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _no_model_load(monkeypatch):
    import ccedit.kinds as kinds

    def refuse(*args, **kwargs):
        raise AssertionError("the destination should have been refused before loading a model")

    monkeypatch.setattr(kinds, "load_pipeline", refuse)


def test_a_full_disk_never_publishes_a_partial_output_nor_destroys_the_old_one(small_disk, tmp_path, kitten, capsys,
                                                                              monkeypatch):
    out = small_disk / "o.mp4"
    assert main(_edit(kitten, out, tmp_path / "cache")) == 0
    good = _snapshot(small_disk)
    assert {"o.mp4", "o.gif", "o.mp4.json"} <= set(good)
    fill_disk(small_disk, leave_bytes=60 * 1024)  # room for the new mp4 (~30 KiB) but not for its GIF (~80 KiB)
    capsys.readouterr()

    # The rough size estimate already refuses it, before any model loads.
    with monkeypatch.context() as m:
        _no_model_load(m)
        assert main([*_edit(kitten, out, tmp_path / "cache"), "--overwrite", "--seed", "5"]) == 2
    assert "free some space" in _error_lines(capsys.readouterr().err)[0]

    # Past the estimate, the encoder runs into the full disk: one line, exit 2, the old set intact.
    monkeypatch.setattr(ccedit.outputs, "estimate_edit_bytes", lambda *a, **k: 0)
    assert main([*_edit(kitten, out, tmp_path / "cache"), "--overwrite", "--seed", "5"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "the disk is full" in line and "nothing was replaced" in line
    after = _snapshot(small_disk)
    after.pop("filler")
    assert after == good
    assert json.loads((small_disk / "o.mp4.json").read_text())["seed"] != 5


def test_a_read_only_destination_is_refused_before_the_work(small_disk, tmp_path, kitten, capsys, monkeypatch):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    _no_model_load(monkeypatch)
    assert main(_edit(kitten, small_disk / "sub" / "o.mp4", tmp_path / "cache")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "cannot write in" in line and "Read-only file system" in line


def test_an_output_path_that_is_a_folder_or_below_a_file_is_refused_before_the_work(tmp_path, kitten, capsys,
                                                                                    monkeypatch):
    _no_model_load(monkeypatch)
    (tmp_path / "o.mp4").mkdir()
    assert main([*_edit(kitten, tmp_path / "o.mp4", tmp_path / "cache"), "--overwrite"]) == 2
    assert "is a folder" in _error_lines(capsys.readouterr().err)[0]
    (tmp_path / "plain").write_text("x")
    assert main(_edit(kitten, tmp_path / "plain" / "o.mp4", tmp_path / "cache")) == 2
    assert "is a file" in _error_lines(capsys.readouterr().err)[0]


@pytest.mark.parametrize("keyframe, png", [("auto@1", "o.keyframe1.png"), ("auto", "o.keyframe2.png")])
def test_an_existing_automatic_keyframe_png_is_refused_before_the_work(tmp_path, kitten, capsys, monkeypatch,
                                                                       keyframe, png):
    _no_model_load(monkeypatch)
    (tmp_path / png).write_text("an earlier keyframe")  # --frames 4: the default keyframe is frame 2
    assert main([*_edit(kitten, tmp_path / "o.mp4", tmp_path / "cache"), "--keyframe", keyframe]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"{tmp_path / png} already exists: pass --overwrite" in line
    assert (tmp_path / png).read_text() == "an earlier keyframe"


def test_a_link_to_nothing_at_the_output_is_refused_before_the_work(tmp_path, kitten, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    (tmp_path / "o.mp4").symlink_to(tmp_path / "gone.mp4")
    assert main(_edit(kitten, tmp_path / "o.mp4", tmp_path / "cache")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "o.mp4 already exists (a link to a missing file): pass --overwrite" in line
    assert (tmp_path / "o.mp4").is_symlink()


# A `ccedit edit` process that stops at a chosen point, so a signal lands in that phase for certain: PAUSE=staged
# sleeps after the first output was written and verified into the staging folder.
_RUNNER = textwrap.dedent("""
    import os, sys, time
    import ccedit.io.writers as writers
    from ccedit.cli import main

    if os.environ.get("PAUSE") == "staged":
        verify = writers.verify_video

        def verify_then_pause(*args, **kwargs):
            verify(*args, **kwargs)
            print("STAGED", file=sys.stderr, flush=True)
            time.sleep(float(os.environ["PAUSE_SECONDS"]))

        writers.verify_video = verify_then_pause
    sys.exit(main(sys.argv[1:]))
""")


def _start(tmp_path, args, pause: str = "", seconds: float = 60) -> subprocess.Popen:
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    # One thread, as in the tests' own process: on a shared CPU, threads that wait on each other slow a run down.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAUSE": pause, "PAUSE_SECONDS": str(seconds), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(runner), *args], env=env, stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL)


def _wait_for(process: subprocess.Popen, marker: str) -> None:
    for line in process.stderr:
        if marker in line:
            return
    raise AssertionError(f"the run ended (exit {process.wait()}) before printing {marker!r}")


@pytest.fixture(scope="module")
def old_set(tmp_path_factory):
    """A finished edit's outputs (made once: each test below starts from a copy) and the arguments that made them,
    relative to a `tmp_path` of the test's."""
    made = tmp_path_factory.mktemp("old_set")
    assert main(_edit(str(VIDEOS / "kitten.mp4"), made / "out" / "o.mp4", made / "cache")) == 0
    return made / "out"


@pytest.mark.parametrize(
    "sig,phase,exit_code",
    [
        (signal.SIGINT, "using a built-in tiny model", 130),  # while the model loads and samples
        (signal.SIGTERM, "STAGED", 143),  # while outputs are being staged: cleaned up at once
        (signal.SIGKILL, "STAGED", -signal.SIGKILL),  # no cleanup at all: the next run recovers
    ],
    ids=["SIGINT-working", "SIGTERM-staging", "SIGKILL-staging"],
)
def test_a_run_killed_in_any_phase_leaves_the_old_set(tmp_path, kitten, old_set, sig, phase, exit_code):
    out_dir = tmp_path / "out"
    shutil.copytree(old_set, out_dir)
    args = _edit(kitten, out_dir / "o.mp4", tmp_path / "cache")
    old = _snapshot(out_dir)
    process = _start(tmp_path, [*args, "--overwrite", "--seed", "5"], pause="staged")
    _wait_for(process, phase)
    process.send_signal(sig)
    assert process.wait(timeout=60) == exit_code
    process.stderr.close()
    if sig != signal.SIGKILL:
        assert _snapshot(out_dir) == old  # the interrupted run cleaned up after itself
    else:
        assert any(p.name.startswith(".") for p in out_dir.iterdir())  # its staging folder is left behind
        # The next run into the same place (here refused: no --overwrite) recovers first.
        assert main(args) == 2
    assert _snapshot(out_dir) == old


def test_an_edit_racing_another_to_the_same_output_is_refused_at_publish_time(tmp_path, kitten, capsys, monkeypatch):
    import ccedit.io as io  # run_edit imports its writers from here at call time

    out = tmp_path / "out" / "o.mp4"

    real_write_gif = io.write_gif
    raced = []

    def other_run_finishes_first(*args, **kwargs):
        if not raced:  # this run has passed its start check and is staging; another edit to `out` completes now
            raced.append(True)
            assert main([*_edit(kitten, out, tmp_path / "cache"), "--seed", "1"]) == 0
        return real_write_gif(*args, **kwargs)

    monkeypatch.setattr(io, "write_gif", other_run_finishes_first)
    assert main([*_edit(kitten, out, tmp_path / "cache"), "--seed", "2"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "another run" in line and "--overwrite" in line
    assert json.loads((out.parent / "o.mp4.json").read_text())["seed"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.gif", "o.mp4", "o.mp4.json"]


@pytest.mark.slow
def test_two_concurrent_edits_to_one_output_give_one_result_and_one_refusal(tmp_path, kitten):
    out_dir = tmp_path / "out"
    # Both pass the start check together; each pauses 2 s once staging so the two publish moments are apart.
    runs = {seed: _start(tmp_path, [*_edit(kitten, out_dir / "o.mp4", tmp_path / f"cache{seed}"), "--seed", seed],
                         pause="staged", seconds=2) for seed in ("1", "2")}
    results = {seed: (p.wait(timeout=300), p.stderr.read()) for seed, p in runs.items()}
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 2], results
    (winner,) = [seed for seed, (code, _) in results.items() if code == 0]
    (loser_err,) = [err for code, err in results.values() if code == 2]
    (line,) = _error_lines(loser_err)
    assert "another run" in line or "already exists" in line
    sidecar = json.loads((out_dir / "o.mp4.json").read_text())
    assert sidecar["seed"] == int(winner)
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.gif", "o.mp4", "o.mp4.json"]


def _convert_args(out: Path, *extra: str) -> list[str]:
    fixture = require(REFERENCE / "tiny_tvi2v.safetensors")
    return ["convert", str(fixture), "--out", str(out), "--geometry", str(REFERENCE / "tiny_config.json"), *extra]


def test_convert_overwrite_replaces_only_a_model_folder(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("not a model")
    assert main(_convert_args(out, "--overwrite")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "not a ccedit model folder" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "not a model"

    (out / "notes.txt").unlink()
    (out / "model_index.json").write_text('{"_class_name": "CCEditPipeline", "_ccedit_source": "x.ckpt"}')
    assert main(_convert_args(out, "--overwrite")) == 0
    (out / "my_lora.safetensors").write_text("mine")  # a model folder the user added to is not replaced either
    assert main(_convert_args(out, "--overwrite")) == 2
    assert "my_lora.safetensors" in _error_lines(capsys.readouterr().err)[0]
    assert (out / "my_lora.safetensors").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_convert_racing_another_to_the_same_out_is_refused(tmp_path, capsys, monkeypatch):
    import ccedit.convert.convert as convert

    out = tmp_path / "model"
    real_write = convert._write_weights
    raced = []

    def other_run_finishes_first(*args, **kwargs):
        if not raced:  # while this conversion writes, another one to the same --out completes
            raced.append(True)
            assert main(_convert_args(out)) == 0
        real_write(*args, **kwargs)

    monkeypatch.setattr(convert, "_write_weights", other_run_finishes_first)
    assert main(_convert_args(out)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "another run" in line
    assert (out / "model_index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
