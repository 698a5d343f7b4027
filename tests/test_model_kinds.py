"""Model kinds: the registry, and that no module outside `ccedit/kinds/` names a family."""

from __future__ import annotations

import ast

import pytest

from ccedit.kinds import KINDS, ModelKind, ModelRef, kind_for, named_models
from ccedit.kinds.registry import folder_kind, register_kind
from tests.conftest import REPO

# Modules that use a registered name for something else, each with its own namespace: the metrics' tiny backbones
# (`metrics/loading.TINY`), the baselines' method types (`methods/`, diffusers' pipelines as they are), the tiny
# geometry the tiny kinds build on (`pipelines/tiny.py`) and training's tiny starting networks.
OTHER_NAMESPACES = ("ccedit/kinds/", "ccedit/metrics/", "ccedit/methods/", "ccedit/pipelines/tiny.py",
                    "ccedit/training/")


def test_each_named_model_belongs_to_one_kind_and_anything_else_is_a_folder():
    assert named_models() == ("tiny", "animatediff-tiny", "animatediff", "wan-vace-tiny", "wan-vace")
    assert {kind_for(name).name for name in named_models()} == {"tiny", "animatediff-tiny", "animatediff",
                                                                "wan-vace-tiny", "wan-vace"}
    assert kind_for("models/my-ccedit") is folder_kind() is KINDS["ccedit"]
    assert kind_for("someone/on-the-hub").folders


def test_a_kind_cannot_take_a_name_another_answers_to():
    with pytest.raises(ValueError, match="registered already"):
        register_kind(ModelKind(name="copy", description="", conventions=KINDS["tiny"].conventions, names=("tiny",)))
    assert "copy" not in KINDS


def test_conventions_are_the_kinds_own():
    assert KINDS["ccedit"].conventions.native_frames == 17  # CCEdit's 17-frame training windows
    assert KINDS["animatediff"].conventions.native_frames == 16  # AnimateDiff's motion modules
    assert KINDS["animatediff"].conventions.sampling_convention == "diffusers"
    assert KINDS["ccedit"].conventions.sampling_convention == "ccedit"


def test_the_tiny_kinds_build_what_their_skeletons_describe():
    for name in ("tiny", "animatediff-tiny"):
        kind = kind_for(name)
        pipe = kind.load(ModelRef(name), [None, "other"], "ddim", "float32", "cpu")
        skeleton = kind.skeleton(ModelRef(name), [None, "other"])
        loaded = [pipe.unet, pipe.temporal, *pipe.controlnets, pipe.appearance, pipe.vae, pipe.text_encoder]
        assert [sum(p.numel() for p in m.parameters()) for m in skeleton.modules()] == [
            sum(p.numel() for p in m.parameters()) for m in loaded if m is not None]
        assert pipe.config.sampling_convention == kind.conventions.sampling_convention


def _family_names_outside_kinds() -> list[str]:
    names = set(named_models())
    found = []
    for path in sorted((REPO / "ccedit").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(OTHER_NAMESPACES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_outside_the_kinds_names_a_family():
    assert _family_names_outside_kinds() == []


def test_a_kinds_conventions_are_the_settings_an_edit_starts_from_and_the_user_still_wins(tmp_path):
    from ccedit.config import load_edit_config

    open_trident = load_edit_config(model="animatediff-tiny")
    assert (open_trident.model.native_frames, open_trident.sampling.scheduler) == (16, "ddim")
    converted = load_edit_config(dotlist=[f"model.path={tmp_path / 'my-ccedit'}"])
    assert (converted.model.native_frames, converted.sampling.scheduler) == (17, "dpmpp_2s_ancestral")
    mine = load_edit_config(model="animatediff-tiny", dotlist=["model.native_frames=8", "sampling.scheduler=euler"])
    assert (mine.model.native_frames, mine.sampling.scheduler) == (8, "euler")


@pytest.mark.parametrize("model", ["tiny", "animatediff-tiny", "wan-vace-tiny"])
def test_the_dry_run_plans_the_windows_the_kind_runs(tmp_path, model):
    """CCEdit centres a window on each keyframe; SparseCtrl takes keyframes where plain windows put them; Wan-VACE
    runs its windows in latent time (4 frames a latent) over the clip fitted to 4k+1 frames: the plan follows the
    model's kind, and equals what the edit then runs."""
    import json

    from ccedit.cli import main
    from ccedit.config import load_edit_config
    from ccedit.plan import plan_edit
    from tests.conditioning import write_moving_disk_clip

    clip = write_moving_disk_clip(tmp_path / "clip", num_frames=20)
    args = ["--frames", "20", "--window", "6", "--overlap", "2", "--steps", "1", "--height", "64", "--width", "64"]
    keyframe = tmp_path / "key.png"
    from ccedit.io import read_image, write_image

    write_image(keyframe, read_image(clip / "0013.png"))
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), "--model", model, *args,
                 "--keyframe", f"{keyframe}@13", "structure.cache_dir=null"]) == 0
    ran = json.loads(out.with_name(out.name + ".json").read_text())["windows"]["per_pass"]
    cfg = load_edit_config(dotlist=[f"model.path={model}", "windows.length=6", "windows.overlap=2"])
    plan = plan_edit(cfg, 20, 64, 64, [13], (64, 64))
    assert plan.windows_per_pass == ran
    assert sum(ran) > 1  # several windows: the window is shorter than the clip in either time
    fitted = "denoised as 21 frames" in plan.lines()[0]
    assert fitted == (kind_for(model).conventions.latent_time_factor == 4)
    kind = kind_for(model)
    loaded = kind.load(ModelRef(model), [None], kind.conventions.scheduler, "float32", "cpu")
    if hasattr(loaded, "trident"):  # the tridents' appearance branch says whether it centres keyframes
        assert loaded.trident().centres_keyframes == kind.conventions.centred_keyframes


def test_a_factor_of_one_plans_exactly_the_pixel_frame_passes():
    """Kinds with one latent per frame keep the plan they had: `TimeGrid(1).passes` is `plan_passes`."""
    from ccedit.pipelines.time_grid import TimeGrid
    from ccedit.pipelines.windows import plan_passes

    for frames, length, overlap, keyframes, hierarchical, centred in [
            (40, 16, 4, [0, 21], None, True), (40, 16, None, [10], None, False), (20, 6, 2, [], False, True),
            (12, None, None, [5], True, True)]:
        assert (TimeGrid(1).passes(frames, length, overlap, keyframes, hierarchical, centred)
                == plan_passes(frames, length, overlap, keyframes, hierarchical, centred))
    # above factor 1: the keyframes' sparse pass over pixel frames, then the clip, each in windows of latent frames
    (anchors, sparse), (frames, dense) = TimeGrid(4).passes(20, 6, 2, [13], None, False)
    assert 13 in anchors and frames == list(range(20))
    assert {len(w) for w in dense} == {3} and dense[-1].frames[-1] == 5  # 6 pixel frames: 3 latent; the clip 6
    assert [len(w) for _, w in TimeGrid(4).passes(20, 6, 2, [], None, False)] == [len(dense)]
