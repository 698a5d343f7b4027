"""Memory guard: the networks' memory is the memory model's peak, the host terms grow with what they say, each term is
placed where it lives, and an edit that cannot fit is refused in one line before decoding, naming what reduces it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ccedit import memory, memory_guard, plan, resources
from ccedit.cli import main
from ccedit.config import load_edit_config
from ccedit.errors import UserError
from ccedit.memory import estimate_edit_memory
from ccedit.memory_guard import check_memory, host_memory_terms, place_memory_terms
from tests.conftest import VIDEOS, memory_estimate
from tests.test_cli_safety import one_error_line
from tests.test_cli_windows import moving_square_clip
from tests.test_resources import _fake_cgroup

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1", "structure.cache_dir=null"]
CLIP = dict(size=(96, 160), source_size=(360, 640))


def _network(**changes):
    """The tiny model's estimate on the CPU, as an edit with the default settings would run it."""
    settings = dict(height=96, width=160, num_frames=16, window_length=16, dtype=torch.float32, geometry="tiny",
                    device_type="cpu", vae_slicing=True)
    if "networks" in changes:  # a model's own networks: traced each time
        return estimate_edit_memory(**{**settings, **changes})
    return memory_estimate(**{**settings, **changes})


def _tiny_model_network(keyframe: bool):
    """`--model tiny` is the keyframe model: its appearance encoder and cross-frame attention are loaded (and the
    attention runs) whether or not a keyframe acts."""
    from ccedit.pipelines.skeleton import geometry_skeleton

    return _network(keyframe=keyframe, networks=geometry_skeleton("tiny", keyframe=True))


def _placed(network, num_frames, size, source_size):
    return place_memory_terms(network, host_memory_terms(num_frames=num_frames, size=size, source_size=source_size))


def _need(network, num_frames=16):
    return _placed(network, num_frames, **CLIP)


def test_host_terms_grow_with_the_frames_and_the_decoding_chunk_is_bounded():
    short, long = host_memory_terms(num_frames=16, **CLIP), host_memory_terms(num_frames=64, **CLIP)
    for term in ("frames", "structure"):
        assert long[term] == 4 * short[term], term
    assert long["decoding"] == 2 * short["decoding"]  # 32 source frames at most, whatever the clip's length
    assert host_memory_terms(num_frames=16, size=(192, 320), source_size=(360, 640))["frames"] == 4 * short["frames"]


def test_the_guards_network_figure_is_the_memory_models_peak_for_the_edits_settings():
    cfg = load_edit_config(dotlist=["model.path=tiny", "windows.length=16"])
    network = memory_guard.estimate_network_memory(cfg, num_frames=16, height=96, width=160, keyframes=[],
                                           device=torch.device("cpu"))
    # float32 on the CPU, the tiny keyframe model's networks, VAE slicing on
    assert network.peak_bytes == _tiny_model_network(keyframe=False).peak_bytes
    assert network.weights["appearance"] == _network(keyframe=True).weights["appearance"] > 0
    keyed = memory_guard.estimate_network_memory(cfg, num_frames=16, height=96, width=160, keyframes=["auto"],
                                         device=torch.device("cpu"))
    assert keyed.peak_bytes == _tiny_model_network(keyframe=True).peak_bytes
    assert keyed.stages["denoising"] > network.stages["denoising"]  # the appearance branch runs
    muted = load_edit_config(dotlist=["model.path=tiny", "windows.length=16", "sampling.appearance_scale=0"])
    assert memory_guard.estimate_network_memory(muted, num_frames=16, height=96, width=160, keyframes=["auto"],
                                        device=torch.device("cpu")).peak_bytes == network.peak_bytes


def test_a_cpu_run_holds_the_network_peak_in_host_memory_once():
    network = _network()
    need = _need(network)
    host = host_memory_terms(num_frames=16, **CLIP)
    assert not need.device
    assert set(network.peak_terms()) <= set(need.host)
    # the memory model's CPU decoding stage holds the edited frames: they are not counted twice
    assert need.host_bytes == network.peak_bytes + host["frames"] + host["structure"] + host["decoding"]
    decoding = _network(num_frames=64, window_length=2, vae_slicing=False, decode_chunk_size=64)
    assert decoding.stage == "decoding"
    assert _need(decoding, 64).host["edited frames"] == decoding.edited_frames_bytes == 64 * 96 * 160 * 3


def test_an_accelerator_holds_the_peak_and_offload_moves_the_weights_to_the_host():
    settings = dict(height=512, width=768, num_frames=17, dtype=torch.float16, geometry="sd15", device_type="cuda",
                    vae_slicing=True)
    resident, offloaded = memory_estimate(**settings), memory_estimate(**settings, cpu_offload=True)
    host = host_memory_terms(num_frames=17, size=(512, 768), source_size=(512, 768))
    on_gpu = _placed(resident, num_frames=17, size=(512, 768), source_size=(512, 768))
    assert on_gpu.device_bytes == resident.peak_bytes + resident.runtime_bytes
    # the host terms, and the output frames the pipeline hands back, which the memory model counts
    assert on_gpu.host == {**host, "edited frames": 17 * 512 * 768 * 3}
    assert on_gpu.host["edited frames"] == resident.edited_frames_bytes
    with_offload = _placed(offloaded, num_frames=17, size=(512, 768), source_size=(512, 768))
    assert with_offload.device_bytes == offloaded.peak_bytes + offloaded.runtime_bytes < on_gpu.device_bytes
    assert with_offload.host_bytes == on_gpu.host_bytes + sum(offloaded.weights.values())


def test_every_term_the_memory_model_gives_has_its_advice():
    estimates = [_network(), _network(keyframe=True, vae_slicing=False), _network(num_frames=20000, window_length=2),
                 _network(device_type="cuda", cpu_offload=True), _network(device_type="cuda")]
    for network in estimates:
        need = _need(network)
        for stage_terms in network.stage_terms.values():
            assert set(stage_terms) <= set(need.reduced_by), set(stage_terms) - set(need.reduced_by)
        for term in (*need.host, *need.device):
            assert term in need.reduced_by, term


def test_the_dry_run_prints_what_the_guard_checks(tmp_path, kitten, capsys, monkeypatch, no_model_loads):
    """`--dry-run` and the guard before decoding ask one function, with the same arguments, for the same need."""
    asked = []

    def spy(cfg, **settings):
        asked.append(settings)
        return edit_memory_need(cfg, **settings)

    edit_memory_need = memory_guard.edit_memory_need
    monkeypatch.setattr(memory_guard, "edit_memory_need", spy)
    monkeypatch.setattr(plan, "edit_memory_need", spy)  # the dry run's own name for it, bound when plan was imported
    args = ["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--keyframe", "auto@1"]
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    monkeypatch.setattr(resources, "available_host_memory", lambda: 1)
    assert main(args) == 2
    refusal = one_error_line(capsys)
    dry, guard = asked
    assert dry["size"] == guard["size"] and dry["num_frames"] == guard["num_frames"] == 4
    assert dry["source_size"] == guard["source_size"] and len(dry["keyframes"]) == len(guard["keyframes"]) == 1
    need = edit_memory_need(load_edit_config(dotlist=["model.path=tiny", "structure.cache_dir=null"]), **guard)
    assert f"memory guard: {need.host_bytes / 2**30:.2f} GiB of the computer's memory" in printed
    assert f"needs about {need.host_bytes / 1e6:.0f} MB of memory" in refusal, refusal


def _refusal(need, available_host=10**12, available_device=None) -> str:
    with pytest.raises(UserError) as error:
        check_memory(need, available_host, available_device)
    message = str(error.value)
    assert "\n" not in message and "model.check_memory=false" in message
    return message


def test_the_refusal_names_the_option_that_reduces_the_largest_term():
    # A whole window of 64 frames per call: its working memory dominates.
    wide = _network(num_frames=64, window_length=64)
    assert max(wide.peak_terms(), key=wide.peak_terms().get) == "window call"
    message = _refusal(_need(wide, 64), available_host=10**8)
    assert "of memory (window call" in message and "reduce it with windows.length, video.height/video.width" in message
    # A long clip in windows of 2: the clip's latents and hint encodings, held across the windows, dominate.
    long = _network(height=64, width=64, num_frames=20000, window_length=2)
    need = _placed(long, num_frames=20000, size=(64, 64), source_size=(64, 64))
    assert "reduce it with video.num_frames, video.height/video.width" in _refusal(need, available_host=10**8)
    check_memory(_need(_network()), available_host=10**12)  # fits: no error
    # On a GPU the weights of the released keyframe model in float16 dominate: offload moves them off the card.
    sd15 = dict(height=512, width=768, num_frames=17, geometry="sd15", device_type="cuda", vae_slicing=True,
                keyframe=True)
    gpu = _placed(memory_estimate(**sd15, dtype=torch.float16), num_frames=17, size=(512, 768),
                           source_size=(512, 768))
    message = _refusal(gpu, available_device=10**9)
    assert "of accelerator memory (weights" in message and "reduce it with model.cpu_offload=true" in message
    # in float32 half precision halves them; without VAE slicing the decoding of 8 frames at once dominates
    assert "reduce it with model.dtype=float16" in _refusal(
        _placed(memory_estimate(**sd15, dtype=torch.float32), num_frames=17, size=(512, 768),
                         source_size=(512, 768)), available_device=10**9)
    unsliced = _placed(memory_estimate(**{**sd15, "vae_slicing": False}, dtype=torch.float16),
                                num_frames=17, size=(512, 768), source_size=(512, 768))
    assert "(VAE decode" in _refusal(unsliced, available_device=10**9)
    assert "model.vae_slicing=true" in _refusal(unsliced, available_device=10**9)


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


@pytest.fixture
def no_model_loads(monkeypatch):
    import ccedit.kinds as kinds

    monkeypatch.setattr(kinds, "load_pipeline", lambda *a, **k: pytest.fail("the model should not load"))


def test_an_edit_too_big_for_the_machine_is_refused_before_decoding(tmp_path, capsys, monkeypatch, no_model_loads):
    from ccedit import preparation

    clip = moving_square_clip(tmp_path / "in.mp4", frames=64)
    monkeypatch.setattr(resources, "available_host_memory", lambda: 100 * 10**6)
    monkeypatch.setattr(preparation, "read_video", lambda *a, **k: pytest.fail("nothing should be decoded"))
    args = ["edit", str(clip), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny", "--height", "96",
            "--width", "160", "--window", "64"]  # fmt: skip
    assert main(args) == 2
    line = one_error_line(capsys)
    need = _need(_network(num_frames=64, window_length=64), 64)
    needed = f"{need.host_bytes / 1e6:.0f} MB" if need.host_bytes < 1e8 else f"{need.host_bytes / 1e9:.1f} GB"
    assert f"needs about {needed} of memory (window call" in line and "with windows.length (--window)" in line, line
    assert not (tmp_path / "o.mp4").exists()


def test_keyframes_are_estimated_with_the_keyframe_model_and_ccedit_keyframe_traces_nothing(
    tmp_path, kitten, capsys, monkeypatch, no_model_loads
):
    seen = []

    def spy(**settings):
        seen.append(settings["keyframe"])
        return estimate_edit_memory(**settings)

    monkeypatch.setattr(memory, "estimate_edit_memory", spy)  # read by the kind at call time
    monkeypatch.setattr(resources, "available_host_memory", lambda: 1)
    for extra in ([], ["--keyframe", "auto"], ["--keyframe", "auto", "sampling.appearance_scale=0"]):
        memory_guard._traced_estimate.cache_clear()  # the spy sees each edit's trace, not one traced before
        assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, *extra]) == 2
        assert "of memory" in one_error_line(capsys)
    assert seen == [False, True, False]
    # `ccedit keyframe` only decodes and fits the frames: the guard counts them and traces no network.
    seen.clear()
    monkeypatch.setattr(resources, "available_host_memory", lambda: 50 * 10**6)
    assert main(["keyframe", kitten, "-o", str(tmp_path / "k.png"), "--model", "tiny", "--height", "2048", "--width", "2048"]) == 2  # fmt: skip
    line = one_error_line(capsys)
    assert "of memory (decoding 0.2 GB, frames 0.2 GB)" in line and not seen, line
    assert not list(tmp_path.iterdir())


def test_force_runs_the_edit_anyway(tmp_path, kitten, monkeypatch):
    monkeypatch.setattr(resources, "available_host_memory", lambda: 1)
    out = tmp_path / "o.mp4"
    assert main(["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, "--force"]) == 0
    assert out.is_file()


def test_an_extreme_aspect_gif_is_refused_in_one_line(tmp_path, capsys, no_model_loads):
    # 4 pixels wide, 4000 high: at the tiny model's short side of 128 the long side would be 128000 pixels.
    gif = tmp_path / "tall.gif"
    frames = [Image.fromarray(np.full((4000, 4, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    assert main(["edit", str(gif), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny"]) == 2
    line = one_error_line(capsys)
    assert "4x4000" in line and "video.height (--height) and video.width (--width)" in line, line
    # Within the side limit but still enormous: the memory guard, not a crash.
    args = ["edit", str(gif), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny", "--height", "8192",
            "--width", "8192", "--window", "16"]  # fmt: skip
    assert main(args) == 2
    assert "of memory" in one_error_line(capsys)


def test_an_edit_over_the_containers_memory_limit_is_refused(tmp_path, capsys, monkeypatch, no_model_loads):
    """Inside a 150 MB cgroup limit (50 MB used) on a computer with plenty free, an edit needing more than the
    100 MB left is refused in one line."""
    limit = 150 * 10**6
    root, membership = _fake_cgroup(tmp_path / "cgroup", {
        "memory.max": f"{limit}\n", "memory.current": f"{50 * 10**6}\n"}, "0::/\n")
    monkeypatch.setattr(resources, "CGROUP_ROOT", root)
    monkeypatch.setattr(resources, "SELF_CGROUP", membership)
    clip = moving_square_clip(tmp_path / "in.mp4", frames=64)
    args = ["edit", str(clip), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny", "--height", "96",
            "--width", "160", "--window", "64"]  # fmt: skip
    need = _need(_network(num_frames=64, window_length=64), 64)
    assert limit < need.host_bytes < resources.available_host_memory(tmp_path / "no-cgroup", tmp_path / "none")
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "of memory" in line and "but 0.1 GB is available" in line, line
    assert not (tmp_path / "o.mp4").exists()


def test_an_edits_memory_is_traced_once_for_the_same_settings(monkeypatch):
    """A process editing many clips with one model and size (an evaluation, a batch) traces the estimate once, and
    each caller gets its own copy."""
    from ccedit import memory_guard as guard

    guard._traced_estimate.cache_clear()
    traced = []
    real = memory.estimate_edit_memory
    monkeypatch.setattr(memory, "estimate_edit_memory", lambda **kw: traced.append(kw) or real(**kw))  # the kind's
    cfg = load_edit_config(dotlist=["model.path=tiny"])
    ask = dict(num_frames=8, height=64, width=64, keyframes=[], device=torch.device("cpu"))
    first, second = guard.estimate_network_memory(cfg, **ask), guard.estimate_network_memory(cfg, **ask)
    assert len(traced) == 1 and first == second and first is not second
    first.notes.append("mine")
    assert "mine" not in guard.estimate_network_memory(cfg, **ask).notes
    guard.estimate_network_memory(cfg, **{**ask, "num_frames": 16})  # other settings: traced again
    assert len(traced) == 2
