"""Who owns `output=`: a run is continued or started over only when asked, a folder that is not a run is never
replaced, and one training at a time writes a run folder."""

import json
import shutil
from pathlib import Path

import pytest

from ccedit.cli import main
from ccedit.training.run_folder import MARKER, claim_run_folder
from tests.test_cli_safety import one_error_line

TINY = "configs/train/tiny.yaml"
SHORT = ["data.synthetic=4", "data.num_frames=3", "train.batch_size=1", "train.checkpoint_every=2"]


def run_train(run, *args):
    return main(["train", TINY, f"output={run}", *SHORT, *args])


def snapshot(folder: Path) -> dict:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def steps(run):
    return [json.loads(line)["step"] for line in (run / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_four_step_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert run_train(run, "train.max_steps=4") == 0
    return run


@pytest.fixture
def four_step_run(tmp_path, finished_four_step_run):
    """A finished four-step run of the test's own: a copy of one trained once per module (tests change it)."""
    run = tmp_path / "run"
    shutil.copytree(finished_four_step_run, run)
    return run


def test_a_run_folder_is_not_started_over_without_a_flag(four_step_run, capsys):
    before = snapshot(four_step_run)
    assert run_train(four_step_run, "train.max_steps=2") == 2
    line = one_error_line(capsys)
    assert "holds a training run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(four_step_run) == before


def test_overwrite_removes_the_old_run_as_a_whole_and_nothing_else(four_step_run, capsys):
    (four_step_run / "notes.txt").write_text("mine")
    assert run_train(four_step_run, "train.max_steps=2", "--overwrite") == 0
    # The old run's later checkpoint is gone, so a later --resume cannot mix the two runs.
    assert sorted(p.name for p in (four_step_run / "checkpoints").iterdir()) == ["step-000002"]
    assert steps(four_step_run) == [1, 2]
    assert (four_step_run / "notes.txt").read_text() == "mine"
    capsys.readouterr()
    assert run_train(four_step_run, "train.max_steps=3", "--resume") == 0
    assert steps(four_step_run) == [1, 2, 3]


@pytest.mark.parametrize("flag", [None, "--overwrite"])
def test_a_folder_that_is_not_a_run_is_left_untouched(tmp_path, capsys, flag):
    folder = tmp_path / "mine"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.safetensors").write_bytes(b"user data")
    (folder / "config.yaml").write_text("user: settings\n")
    before = snapshot(folder)
    assert run_train(folder, "train.max_steps=1", *([flag] if flag else [])) == 2
    line = one_error_line(capsys)
    assert "not a ccedit training run" in line
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model"]


def test_an_empty_folder_takes_a_new_run(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert run_train(folder, "train.max_steps=1") == 0
    assert steps(folder) == [1] and (folder / MARKER).is_file()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_second_training_into_a_folder_in_use_is_refused(four_step_run, capsys, flag):
    before = snapshot(four_step_run)
    running = claim_run_folder(four_step_run, resume=True, overwrite=False)  # what a live training holds
    try:
        assert run_train(four_step_run, "train.max_steps=6", flag) == 2
    finally:
        running.release()
    assert "another `ccedit train` is writing" in one_error_line(capsys)
    assert snapshot(four_step_run) == before


def test_overwrite_refuses_to_remove_the_data_it_would_train_on(four_step_run, capsys):
    assert main(["train", TINY, f"output={four_step_run}", *SHORT, "data.synthetic=0",
                 f"data.videos={four_step_run / 'data'}", "--overwrite"]) == 2
    assert "data.videos" in one_error_line(capsys)
    assert (four_step_run / "data" / "captions.csv").is_file()
