"""Training the tiny open trident (AnimateDiff motion modules + SparseCtrl) through the same forward as sampling:
only the trained roles move, the trained parts load back as diffusers' own classes, a run resumes exactly."""

import json
import math
import shutil

import pytest
import torch
from diffusers import MotionAdapter, SparseControlNetModel

from ccedit.cli import main
from ccedit.models import build_trident
from ccedit.training import load_train_config, train
from ccedit.training.model import build_models
from tests.test_cli_safety import one_error_line

TINY = "configs/train/tiny.yaml"
OPEN = ["model.base=animatediff-tiny", "model.keyframe=true", "model.trainable=[temporal,appearance]",
        "data.synthetic=4", "data.num_frames=3", "train.batch_size=1", "train.max_steps=2",
        "train.checkpoint_every=1", "train.sample_every=2", "train.sample_steps=1"]
WEIGHTS = "diffusion_pytorch_model.safetensors"


def config(run, *more):
    return load_train_config(TINY, [f"output={run}", *OPEN, *more])


def losses(run):
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def open_run(tmp_path_factory):
    """Two steps training the motion modules and SparseCtrl, a checkpoint after each, a sample at the end."""
    run = tmp_path_factory.mktemp("open") / "run"
    torch.set_num_threads(1)  # module-scoped: set here as well as by conftest's per-test fixture
    return run, train(config(run))


def test_only_the_motion_modules_and_sparsectrl_change_and_the_loss_is_finite(open_run):
    run, result = open_run
    assert result.step == 2 and all(math.isfinite(loss) for loss in result.losses)
    start = build_models(config(run).model).trident  # the same seeded networks the run started from
    trained = result.trident
    roles = trained.named_parameters_by_role()
    assert sorted(roles) == ["appearance", "temporal"]  # no cross-frame attention in AnimateDiff
    assert roles["temporal"] and all(".motion_modules." in n for n in roles["temporal"])
    trained_names = {*roles["temporal"], *roles["appearance"]}
    assert {n for n, p in trained.named_parameters() if p.requires_grad} == trained_names
    before = dict(start.named_parameters())
    moved = {n for n, p in trained.named_parameters() if not torch.equal(p.detach(), before[n].detach())}
    assert moved == trained_names  # every trained parameter moved, and nothing else (UNet, ControlNet)


def test_the_trained_parts_load_as_a_motion_adapter_and_a_sparse_controlnet(open_run):
    run, result = open_run
    trained = result.trident
    adapter = MotionAdapter.from_pretrained(run / "model" / "temporal")
    sparse = SparseControlNetModel.from_pretrained(run / "model" / "appearance")
    for name, a in trained.appearance.state_dict().items():
        assert torch.equal(a, sparse.state_dict()[name]), name
    # The adapter, put on the base UNet as the open trident's loader does, gives the trained motion modules back.
    start = build_models(config(run).model).trident
    assert start.main.frozen_modules()  # the image UNet the motion modules sit in
    rebuilt = build_trident(_image_unet(), adapter).main.named_parameters_by_role()["temporal"]
    trained_temporal = trained.main.named_parameters_by_role()["temporal"]
    assert rebuilt.keys() == trained_temporal.keys()
    assert all(torch.equal(rebuilt[n], trained_temporal[n]) for n in rebuilt)
    assert not all(torch.equal(rebuilt[n], p) for n, p in start.main.named_parameters_by_role()["temporal"].items())


def _image_unet():
    from ccedit.pipelines.tiny import tiny_animatediff_components

    return tiny_animatediff_components(appearance=False)["unet"]


def test_a_sample_video_is_written_by_the_open_trident(open_run):
    from ccedit.io import read_video

    run, _ = open_run
    frames = read_video(run / "samples" / "step-2.mp4").frames
    assert frames.shape[0] == 3 and frames.shape[1:3] == (32, 32)


def test_a_resumed_open_trident_run_repeats_the_uninterrupted_one(open_run, tmp_path):
    run, _ = open_run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    shutil.rmtree(stopped / "checkpoints" / "step-000002")
    shutil.rmtree(stopped / "model")
    (stopped / "losses.jsonl").write_text(json.dumps(losses(run)[0]) + "\n")
    resumed = train(config(stopped), resume=True)
    assert resumed.step == 2 and len(resumed.losses) == 1
    assert losses(stopped) == losses(run)
    for part in ("temporal", "appearance"):
        assert (run / "model" / part / WEIGHTS).read_bytes() == (stopped / "model" / part / WEIGHTS).read_bytes(), part


def test_cross_frame_is_refused_for_the_open_trident_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", TINY, f"output={run}", *OPEN, "model.trainable=[temporal,cross_frame]"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "cross_frame" in line and "model.base=animatediff-tiny" in line and "temporal, appearance" in line
    assert not run.exists()


def test_mixed_precision_casts_the_image_unet_but_not_the_motion_modules():
    from ccedit.training.trainer import _cast_frozen

    models = build_models(config("unused").model)
    main_branch = models.trident.main
    motion = main_branch.named_parameters_by_role()["temporal"]
    frozen = {id(p) for m in main_branch.frozen_modules() for p in m.parameters()}
    assert frozen.isdisjoint(map(id, motion.values()))
    assert frozen | {id(p) for p in motion.values()} == {id(p) for p in main_branch.parameters()}
    _cast_frozen(models, torch.float16, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in motion.values())
    assert {p.dtype for m in main_branch.frozen_modules() for p in m.parameters()} == {torch.float16}


def test_gradient_checkpointing_of_the_motion_branch_gives_the_same_gradients():
    from ccedit.schedulers import DiscreteEpsDenoiser
    from ccedit.training.trainer import training_loss

    cfg = config("unused")
    models = build_models(cfg.model)
    params = models.trident.set_trainable(["temporal"])
    f, size = 3, 32
    batch = {"pixels": torch.rand(1, 3, f, size, size) * 2 - 1, "structure": torch.rand(1, 3, f, size, size),
             "captions": ["a red circle"], "seeds": [1], "skipped": 0}

    def grads():
        for p in params:
            p.grad = None
        training_loss(models.trident, models, batch, DiscreteEpsDenoiser(), cfg, 0, torch.device("cpu")).backward()
        return [p.grad.clone() for p in params]

    plain = grads()
    models.trident.main.enable_gradient_checkpointing()
    assert models.trident.main.unet.is_gradient_checkpointing
    checkpointed = grads()
    assert any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_run_starts_from_a_trained_motion_adapter_and_sparsectrl(open_run, tmp_path, capsys):
    run, result = open_run
    start_from = [f"model.temporal={run / 'model'}", f"model.appearance={run / 'model'}"]
    models = build_models(config("unused", *start_from).model)
    started = dict(models.trident.named_parameters())
    trained = result.trident.named_parameters_by_role()
    assert all(torch.equal(started[n], p) for role in trained.values() for n, p in role.items())
    # Motion modules of another shape: one line naming the setting, before the run folder is made.
    other = tmp_path / "other"
    MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2, motion_norm_num_groups=8,
                  motion_num_attention_heads=2).save_pretrained(other)
    assert main(["train", TINY, f"output={tmp_path / 'run'}", *OPEN, f"model.temporal={other}"]) == 2
    assert "model.temporal" in one_error_line(capsys) and not (tmp_path / "run" / "checkpoints").exists()
