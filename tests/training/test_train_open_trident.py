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



@pytest.fixture(scope="module")
def real_parts(tmp_path_factory):
    """The tiny open trident saved as real parts are published: an SD-1.5 folder (unet/, vae/, text_encoder/,
    tokenizer/), a `MotionAdapter` folder and a ControlNet folder, by the setting that names each."""
    folder = tmp_path_factory.mktemp("parts")
    parts = _tiny_open_trident()
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        parts[name].save_pretrained(folder / "sd15" / name)
    parts["temporal"].save_pretrained(folder / "motion")
    parts["controlnet"].save_pretrained(folder / "controlnet")
    return {"base": folder / "sd15", "temporal": folder / "motion", "controlnet": folder / "controlnet"}


def _tiny_open_trident() -> dict:
    from ccedit.pipelines.tiny import tiny_animatediff_components

    return tiny_animatediff_components(appearance=False)


def from_parts(folders: dict) -> list[str]:
    return [f"model.{setting}={folder}" for setting, folder in folders.items()]


@pytest.fixture(scope="module")
def real_parts_run(real_parts, tmp_path_factory):
    """Two steps training the motion modules and a new SparseCtrl (none given) from the real parts' folders."""
    run = tmp_path_factory.mktemp("real") / "run"
    torch.set_num_threads(1)
    return run, train(config(run, *from_parts(real_parts)))


def test_the_open_trident_from_real_parts_is_the_tiny_one_when_the_parts_are_the_tiny_ones(real_parts):
    text_to_video = ["model.keyframe=false", "model.trainable=[temporal]"]
    tiny = build_models(config("unused", *text_to_video).model)
    loaded = build_models(config("unused", *from_parts(real_parts), *text_to_video).model)
    expected = dict(tiny.trident.named_parameters())
    assert type(loaded.trident.main) is type(tiny.trident.main) and loaded.trident.appearance is None
    assert {n: p.shape for n, p in loaded.trident.named_parameters()} == {n: p.shape for n, p in expected.items()}
    assert all(torch.equal(p, expected[n]) for n, p in loaded.trident.named_parameters())
    assert (type(loaded.scheduler), loaded.sampling_convention) == (type(tiny.scheduler), tiny.sampling_convention)


def test_a_run_from_real_parts_trains_only_the_motion_modules_and_a_sparsectrl_made_from_the_unet(real_parts,
                                                                                                real_parts_run):
    run, result = real_parts_run
    assert result.step == 2 and all(math.isfinite(loss) for loss in result.losses)
    trained = result.trident
    roles = trained.named_parameters_by_role()
    assert sorted(roles) == ["appearance", "temporal"]
    assert roles["temporal"] and all(".motion_modules." in n for n in roles["temporal"])
    assert isinstance(trained.appearance, SparseControlNetModel)
    trained_names = {*roles["temporal"], *roles["appearance"]}
    assert {n for n, p in trained.named_parameters() if p.requires_grad} == trained_names
    start = build_models(config(run, *from_parts(real_parts)).model).trident
    before = dict(start.named_parameters())
    moved = {n for n, p in trained.named_parameters() if not torch.equal(p.detach(), before[n].detach())}
    assert set(roles["temporal"]) <= moved <= trained_names  # the UNet and the ControlNet stayed as loaded
    # The new SparseCtrl started as a copy of the UNet's encoder (diffusers' `from_unet`) and trained away from it.
    image_unet = start.main.unet
    assert torch.equal(start.appearance.conv_in.weight, image_unet.conv_in.weight)
    assert not torch.equal(trained.appearance.conv_in.weight, image_unet.conv_in.weight)
    assert (run / "samples" / "step-2.mp4").is_file()


def test_a_run_from_real_parts_saves_a_motion_adapter_and_a_sparse_controlnet(real_parts, real_parts_run):
    from diffusers import UNet2DConditionModel

    run, result = real_parts_run
    trained = result.trident
    sparse = SparseControlNetModel.from_pretrained(run / "model" / "appearance")
    assert all(torch.equal(p, sparse.state_dict()[n]) for n, p in trained.appearance.state_dict().items())
    # The saved adapter on the base folder's UNet gives the trained motion modules back.
    adapter = MotionAdapter.from_pretrained(run / "model" / "temporal")
    rebuilt = build_trident(UNet2DConditionModel.from_pretrained(real_parts["base"] / "unet"), adapter)
    motion = rebuilt.main.named_parameters_by_role()["temporal"]
    trained_motion = trained.main.named_parameters_by_role()["temporal"]
    assert motion.keys() == trained_motion.keys()
    assert all(torch.equal(motion[n], trained_motion[n]) for n in motion)


@pytest.mark.parametrize("given_as", ["folder", "cached hub id"])
def test_cross_frame_with_a_motion_adapter_is_refused_in_one_line_before_anything_loads(real_parts, tmp_path, capsys,
                                                                                         monkeypatch, given_as):
    from huggingface_hub import constants

    from ccedit.training import trainer

    def no_loading(*_):
        raise AssertionError("the networks were loaded before the settings were checked")

    monkeypatch.setattr(trainer, "build_models", no_loading)
    temporal = str(real_parts["temporal"])
    if given_as == "cached hub id":  # a hub cache holding the adapter: read from there, with nothing fetched
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        commit = "0" * 40
        repo = tmp_path / "cache" / "models--someone--motion-adapter"
        shutil.copytree(temporal, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        temporal = "someone/motion-adapter"
    run = tmp_path / "run"
    settings = [*from_parts({**real_parts, "temporal": temporal}), "model.trainable=[temporal,cross_frame]"]
    assert main(["train", TINY, f"output={run}", *OPEN, *settings]) == 2
    line = one_error_line(capsys)
    assert "cross_frame" in line and f"model.temporal={temporal}" in line and "MotionAdapter" in line
    assert "temporal, appearance" in line and not run.exists()


def test_a_new_sparsectrl_is_made_from_the_unet_and_leaves_the_unet_as_it_was():
    from ccedit.training.model import _sparse_control_from_unet

    unet = _tiny_open_trident()["unet"]
    block_types = list(unet.config.down_block_types)
    sparse = _sparse_control_from_unet(unet)
    assert list(unet.config.down_block_types) == block_types  # diffusers' `from_unet` alone rewrites them
    assert torch.equal(sparse.conv_in.weight, unet.conv_in.weight)
    assert sparse.config.conditioning_channels == unet.config.in_channels  # keyframe latents in


@pytest.mark.parametrize("case", ["temporal not cached", "no controlnet"])
def test_parts_that_cannot_be_used_are_one_line_before_the_run_folder(real_parts, tmp_path, capsys, case):
    parts = {**real_parts, "temporal": "someone/motion-adapter-not-in-the-cache"}
    expected = ["model.temporal someone/motion-adapter-not-in-the-cache", "hf download"]
    if case == "no controlnet":
        parts = {"base": real_parts["base"], "temporal": real_parts["temporal"]}
        expected = ["model.controlnet is not set"]
    run = tmp_path / "run"
    assert main(["train", TINY, f"output={run}", *OPEN, *from_parts(parts)]) == 2
    line = one_error_line(capsys)
    assert all(text in line for text in expected), line
    assert not run.exists()
