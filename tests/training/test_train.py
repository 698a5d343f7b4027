"""Training on tiny random components: resume, frozen parts, the pipeline loading the result, bad input."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from ccedit.cli import main
from ccedit.models import CCEditTemporalAdapter
from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.tiny import tiny_components
from ccedit.training import load_train_config, train
from ccedit.training.synthetic import build_synthetic_set

TINY = "configs/train/tiny.yaml"
# A short run of the acceptance config: small enough for the default suite.
SHORT = ["data.synthetic=4", "data.num_frames=3", "train.batch_size=1"]


def losses(run):
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def config(run, *settings):
    return load_train_config(TINY, [f"output={run}", *SHORT, *settings])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: with several, a math library may split sums differently when the machine is busy, and
    bitwise comparisons between runs then fail in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def keyframe_run(tmp_path_factory):
    """Six steps of the keyframe model (every role trains), a checkpoint every three."""
    run = tmp_path_factory.mktemp("keyframe")
    settings = ["model.keyframe=true", "model.trainable=[temporal,cross_frame,appearance]", "train.max_steps=6",
                "train.checkpoint_every=3", "data.keyframe_index=random", "train.use_ema=true", "train.ema_decay=0.5"]
    result = train(config(run, *settings))
    return run, settings, result


def test_a_resumed_run_repeats_the_uninterrupted_one_exactly(keyframe_run, tmp_path):
    run, settings, result = keyframe_run
    assert [r["step"] for r in losses(run)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    # The same run, stopped after its step-3 checkpoint: a fresh process resumes it from there.
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    shutil.rmtree(stopped / "checkpoints" / "step-000006")
    shutil.rmtree(stopped / "model")
    (stopped / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in losses(run)[:4]))  # step 4 half-logged
    resumed = train(config(stopped, *settings), resume=True)
    assert resumed.step == 6 and len(resumed.losses) == 3
    assert losses(stopped) == losses(run)  # bitwise: the JSON floats round-trip exactly
    for part in ("temporal", "appearance"):
        a = (run / "model" / part / "diffusion_pytorch_model.safetensors").read_bytes()
        assert a == (stopped / "model" / part / "diffusion_pytorch_model.safetensors").read_bytes(), part


def test_only_the_trained_roles_change(keyframe_run):
    run, _, result = keyframe_run
    start = tiny_components(keyframe=False)
    trained = result.trident
    for name, frozen in (("unet", trained.main.unet), ("controlnet", trained.structure[0])):
        for (key, a), (_, b) in zip(start[name].state_dict().items(), frozen.state_dict().items()):
            assert torch.equal(a, b), f"{name}.{key} moved"
    assert not any(p.requires_grad for p in trained.main.unet.parameters())
    roles = trained.named_parameters_by_role()
    assert all(p.requires_grad for params in roles.values() for p in params.values())
    # every role learned something: the zero-initialised layers left zero
    temporal = CCEditTemporalAdapter.from_pretrained(run / "model" / "temporal")
    assert temporal.down_blocks[0].attentions[0].cross_frame.proj_out.weight.abs().max() > 0
    assert temporal.conv_out.weight.abs().max() > 0


def test_only_trainable_parameters_get_gradients():
    from ccedit.schedulers import DiscreteEpsDenoiser
    from ccedit.training.model import build_models
    from ccedit.training.trainer import training_loss

    cfg = load_train_config(TINY, ["output=unused", "model.keyframe=true", "model.trainable=[cross_frame]"])
    models = build_models(cfg.model)
    models.trident.set_trainable(["cross_frame"])
    f, size = 3, 32
    batch = {"pixels": torch.rand(2, 3, f, size, size) * 2 - 1, "structure": torch.rand(2, 3, f, size, size),
             "captions": ["a red circle", "a blue square"], "seeds": [1, 2], "skipped": 0}
    training_loss(models.trident, models, batch, DiscreteEpsDenoiser(), cfg, 0, torch.device("cpu")).backward()
    roles = models.trident.named_parameters_by_role()
    with_grad = {n for n, p in models.trident.named_parameters() if p.grad is not None}
    assert with_grad == set(roles["cross_frame"])
    assert all(p.grad.abs().sum() > 0 for n, p in roles["cross_frame"].items() if ".proj_out." in n)


def test_trained_temporal_layers_load_into_the_pipeline_and_change_its_output(tmp_path):
    run = tmp_path / "run"
    train(config(run, "train.max_steps=2", "train.checkpoint_every=100"))
    parts = tiny_components(keyframe=False)
    trained = CCEditTemporalAdapter.from_pretrained(run / "model" / "temporal")
    start = CCEditTemporalAdapter(**trained.config).zero_init()
    rng = np.random.RandomState(0)
    video = (rng.rand(4, 64, 64, 3) * 255).astype(np.uint8)
    maps = torch.from_numpy(rng.rand(4, 3, 64, 64).astype(np.float32))

    def edit(temporal):
        pipe = CCEditPipeline(**{**parts, "temporal": temporal.eval()})
        return pipe("a red circle", video, structure_maps=[maps], num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), progress=False).frames

    assert np.abs(edit(trained).astype(int) - edit(start).astype(int)).max() > 0


def test_some_missing_videos_are_skipped_and_counted(tmp_path, capsys):
    data = tmp_path / "data"
    build_synthetic_set(data, 2, num_frames=8, size=32)
    with (data / "captions.csv").open("a", newline="") as f:
        csv.writer(f).writerows([["gone.mp4", "a lost clip"], ["also_gone.mp4", "another"]])
    code = main(["train", TINY, f"output={tmp_path / 'run'}", f"data.videos={data}", "data.synthetic=0",
                 "data.num_frames=3", "train.batch_size=1", "train.max_steps=1"])
    assert code == 0
    assert "2 unusable videos skipped" in capsys.readouterr().out


def _webvid_set(tmp_path):
    data = tmp_path / "webvid"
    build_synthetic_set(data, 1, num_frames=8, size=32)
    (data / "shapes_0000.mp4").rename(data / "1234.mp4")
    (data / "captions.csv").write_text("videoid,name\n1234,a clip\n")
    return data


def test_webvid_columns_are_read(tmp_path):
    from ccedit.training.data import scan_videos

    cfg = load_train_config(TINY, [f"data.videos={_webvid_set(tmp_path)}", "data.num_frames=3"])
    report = scan_videos(cfg.data)
    assert [(e.path.name, e.caption) for e in report.entries] == [("1234.mp4", "a clip")]


# Settings a run cannot use: refused by name when the config loads, before any model or the run folder.
OUT_OF_RANGE = {
    "train.learning_rate=inf": "train.learning_rate must be a finite number",
    "train.adam_beta1=nan": "train.adam_beta1 must be a finite number",
    "train.learning_rate=-1e-4": "train.learning_rate must be from 0 to 1",
    "train.text_dropout=1.5": "train.text_dropout must be from 0 to 1",
    "train.adam_beta2=1.0": "train.adam_beta2 must be from 0 to 0.99999",
    "train.seed=-1": "train.seed must be from 0",
    "train.max_steps=0": "train.max_steps must be at least 1",
    "train.checkpoint_every=0": "train.checkpoint_every must be at least 1",
    "data.num_frames=0": "data.num_frames must be from 1",
}


@pytest.mark.parametrize("setting", OUT_OF_RANGE)
def test_out_of_range_settings_are_one_line_before_any_work(tmp_path, capsys, setting):
    run = tmp_path / "run"
    assert main(["train", TINY, f"output={run}", *SHORT, "train.max_steps=1", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and OUT_OF_RANGE[setting] in err[0], err
    assert not run.exists()


def test_every_training_bound_names_a_setting():
    from dataclasses import fields, is_dataclass

    from ccedit.config_checks import TRAIN_BOUNDS
    from ccedit.training import TrainConfig

    def keys(schema, prefix=""):
        for f in fields(schema):
            default = f.default_factory() if callable(f.default_factory) else f.default
            yield from keys(default, f"{prefix}{f.name}.") if is_dataclass(default) else [f"{prefix}{f.name}"]

    assert set(TRAIN_BOUNDS) <= set(keys(TrainConfig()))


@pytest.mark.parametrize("case", ["empty folder", "all missing", "unknown key", "resume without checkpoint"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    data = tmp_path / "videos"
    data.mkdir()
    args = ["train", TINY, f"output={tmp_path / 'run'}", "data.synthetic=0", f"data.videos={data}"]
    expected = {"empty folder": "is empty", "all missing": "none of the 1 videos", "unknown key": "train.lr",
                "resume without checkpoint": "no checkpoint"}[case]
    if case == "all missing":
        (data / "captions.csv").write_text("path,caption\nmissing.mp4,a clip\n")
    if case == "unknown key":
        args.append("train.lr=1")
    if case == "resume without checkpoint":
        args = ["train", TINY, f"output={tmp_path / 'run'}", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err


@pytest.mark.slow
def test_the_loss_falls_over_the_acceptance_run(tmp_path):
    """The acceptance run (300 steps, a few minutes on a CPU): `pytest -m slow tests/training` or
    `python tools/benchmark_train.py`, which prints the numbers."""
    from ccedit.training.trainer import loss_summary

    result = train(load_train_config(TINY, [f"output={tmp_path}"]))
    first, last = loss_summary(result.losses)
    print(f"mean loss, first tenth {first:.4f}, last tenth {last:.4f}, ratio {last / first:.3f}")
    assert last <= 0.7 * first
    assert (tmp_path / "checkpoints" / "step-000300").is_dir() and (tmp_path / "model" / "temporal").is_dir()


def test_sample_videos_are_written_every_m_steps_and_change_as_the_model_trains(tmp_path):
    from ccedit.io import read_video

    run = tmp_path / "run"
    train(config(run, "train.max_steps=4", "train.sample_every=2", "train.sample_steps=1", "train.learning_rate=1e-2"))
    samples = sorted((run / "samples").iterdir())
    assert [p.name for p in samples] == ["step-2.mp4", "step-4.mp4"]
    first, second = (read_video(p).frames for p in samples)
    assert first.shape[0] == 3 and first.shape[1:3] == (32, 32)  # data.height x data.width of tiny.yaml
    assert not np.array_equal(first, second)  # the trained temporal layers moved between the two
