"""`accelerate launch` with two CPU processes (gloo) gives the first step of a one-process run of the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccedit.training.state_files import read_state

ROOT = Path(__file__).resolve().parents[2]
# Dropout and offset noise on, so that every per-sample draw must line up between the two layouts.
SETTINGS = ["data.synthetic=4", "data.num_frames=3", "train.max_steps=1", "train.text_dropout=0.5",
            "train.structure_dropout=0.5", "train.offset_noise=0.1"]


def first_step(launcher: list[str], output: Path, batch_size: int):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [*launcher, "train", "configs/train/tiny.yaml", f"output={output}", f"train.batch_size={batch_size}", *SETTINGS]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loss = json.loads((output / "losses.jsonl").read_text().splitlines()[0])["loss"]
    state = read_state(output / "checkpoints" / "step-000001" / "optimizer.safetensors")["state"]
    # After one AdamW step, exp_avg = (1 - beta1) * gradient: the (all-reduced) gradient, parameter by parameter.
    return loss, [state[i]["exp_avg"] for i in sorted(state)]


@pytest.mark.slow  # two launches, three processes: the README's `accelerate launch ... train` command
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    one_loss, one_grad = first_step([sys.executable, "-m", "ccedit"], tmp_path / "one", batch_size=2)
    # `--multi_gpu` selects accelerate's torchrun launcher, which also starts CPU processes (the run joins them over
    # gloo); `--cpu` alone would start one process unless MPI is installed.
    launch = [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ccedit"]
    two_loss, two_grad = first_step(launch, tmp_path / "two", batch_size=1)
    assert abs(one_loss - two_loss) <= 1e-5 * abs(one_loss)
    assert len(one_grad) == len(two_grad) and any(g.abs().max() > 0 for g in one_grad)
    for a, b in zip(one_grad, two_grad):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-4)
