"""Checkpoints are data, verified before use, and resume exactly: planted pickles never run, a damaged newest
checkpoint falls back to the previous one, an inconsistent one is refused in one line, random draws line up."""

import json
import logging
import shutil

import pytest
import torch

from ccedit.cli import main
from ccedit.training import load_train_config, train
from ccedit.training import trainer as trainer_module
from tests.test_cli_safety import one_error_line

TINY = "configs/train/tiny.yaml"
# Dropout active in the temporal layers: every step draws from the global generator, so a resume that restores the
# random states one draw off changes the losses.
SETTINGS = ["data.synthetic=4", "data.num_frames=3", "train.batch_size=1", "train.max_steps=4",
            "train.checkpoint_every=2", "train.use_ema=true", "train.ema_decay=0.5"]
DROPOUT = 0.2


def with_dropout(build):
    def build_with_dropout(config):
        models = build(config)
        for module in models.trident.main.temporal.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = DROPOUT
        return models

    return build_with_dropout


@pytest.fixture
def dropout(monkeypatch):
    monkeypatch.setattr(trainer_module, "build_models", with_dropout(trainer_module.build_models))


def losses(run):
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def settings(run, *more):
    return [f"output={run}", *SETTINGS, *more]


def weights(run):
    return (run / "model" / "temporal" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Four steps with dropout on, checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("full") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every test (conftest): sums split alike in both runs, to the last bit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "build_models", with_dropout(trainer_module.build_models))
        train(load_train_config(TINY, settings(run)))
    torch.set_num_threads(threads)
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-000002", "step-000004"]
    return run


def stopped_copy(full_run, tmp_path, keep_newest: bool = False):
    """The full run as it was when stopped after step 2 (or, with `keep_newest`, after step 4's checkpoint)."""
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    shutil.rmtree(run / "model")
    if not keep_newest:
        shutil.rmtree(run / "checkpoints" / "step-000004")
        (run / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in losses(full_run)[:3]))
    return run


def test_a_resumed_run_with_dropout_repeats_the_uninterrupted_one_bitwise(full_run, tmp_path, dropout):
    run = stopped_copy(full_run, tmp_path)
    result = train(load_train_config(TINY, settings(run)), resume=True)
    assert result.step == 4 and len(result.losses) == 2
    assert losses(run) == losses(full_run)
    assert weights(run) == weights(full_run)


class WritesAFile:
    """A pickle that creates a file when unpickled: proof that a loader ran code from the run folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_planted_in_a_checkpoint_are_never_run(full_run, tmp_path, dropout):
    run = stopped_copy(full_run, tmp_path)
    marker = tmp_path / "code-ran"
    checkpoint = run / "checkpoints" / "step-000002"
    # Names accelerate's `load_state` unpickles: the registered objects' states (LR schedule, EMA) without
    # weights-only loading, and the others.
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "scheduler.bin",
                 "sampler.bin", "scaler.pt"):
        torch.save(WritesAFile(marker), checkpoint / name)
    train(load_train_config(TINY, settings(run)), resume=True)
    assert not marker.exists()
    assert losses(run) == losses(full_run) and weights(run) == weights(full_run)  # the planted files changed nothing


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage(checkpoint, how):
    if how == "truncated weights":
        truncate(checkpoint / "temporal" / "diffusion_pytorch_model.safetensors")
    elif how == "garbage optimiser state":
        for path in checkpoint.glob("optimizer*"):
            path.write_bytes(b"\x80\x04not a state at all" * 10)
    elif how == "no temporal layers":
        shutil.rmtree(checkpoint / "temporal")
    elif how == "a step it never reached":
        (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 99999999}))
    elif how == "no record":
        (checkpoint / "trainer_state.json").unlink()


DAMAGES = ["truncated weights", "garbage optimiser state", "no temporal layers", "a step it never reached"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(full_run, tmp_path, dropout, caplog, how):
    run = stopped_copy(full_run, tmp_path, keep_newest=True)
    damage(run / "checkpoints" / "step-000004", how)
    with caplog.at_level(logging.WARNING, logger="ccedit.training"):
        result = train(load_train_config(TINY, settings(run)), resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step-000004" in w and "damaged" in w for w in warnings), warnings
    assert len(result.losses) == 2  # steps 3 and 4 again, from step 2
    assert losses(run) == losses(full_run) and weights(run) == weights(full_run)


@pytest.mark.parametrize("how", ["no temporal layers", "truncated weights", "garbage optimiser state", "no record"])
def test_no_intact_checkpoint_is_one_line_naming_the_file(full_run, tmp_path, capsys, how):
    run = stopped_copy(full_run, tmp_path, keep_newest=True)
    for checkpoint in (run / "checkpoints").iterdir():
        damage(checkpoint, how)
    before = losses(run)
    assert main(["train", TINY, *settings(run), "--resume"]) == 2
    line = one_error_line(capsys)
    named = {"no temporal layers": "temporal/", "truncated weights": "temporal/diffusion_pytorch_model.safetensors",
             "garbage optimiser state": "optimizer", "no record": "trainer_state.json"}[how]
    assert "step-000004" in line and named in line, line
    assert losses(run) == before and not (run / "model").exists()  # nothing trained, nothing rewritten


def test_a_checkpoint_beyond_max_steps_is_refused(full_run, tmp_path, capsys):
    run = stopped_copy(full_run, tmp_path, keep_newest=True)
    assert main(["train", TINY, *settings(run, "train.max_steps=3"), "--resume"]) == 2
    assert "beyond train.max_steps=3" in one_error_line(capsys)


def test_a_checkpoint_of_other_roles_is_refused(full_run, tmp_path, capsys):
    run = stopped_copy(full_run, tmp_path)
    other = settings(run, "model.keyframe=true", "model.trainable=[temporal,appearance]")
    assert main(["train", TINY, *other, "--resume"]) == 2
    assert "model.trainable" in one_error_line(capsys)


def test_damaged_loss_lines_are_dropped_with_a_warning(full_run, tmp_path, dropout, caplog):
    run = stopped_copy(full_run, tmp_path)
    rows = losses(full_run)
    good = [json.dumps(r).encode() + b"\n" for r in rows[:2]]
    # A torn line, invalid UTF-8, a row that is not an object, one without a step, deep nesting: a log's damage.
    bad = [b'{"step": 2, "lo\n', b"\xff\xfe\n", b"[1, 2]\n", b'{"loss": 1.0}\n', b"[" * 100000 + b"\n"]
    (run / "losses.jsonl").write_bytes(good[0] + bad[0] + bad[1] + good[1] + bad[2] + bad[3] + bad[4])
    with caplog.at_level(logging.WARNING, logger="ccedit.training"):
        train(load_train_config(TINY, settings(run)), resume=True)
    assert any("dropped 5 damaged lines" in r.getMessage() for r in caplog.records)
    assert losses(run) == rows
