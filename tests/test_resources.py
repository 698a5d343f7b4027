"""Memory guard: the estimate's terms grow with what they say, and an edit that cannot fit is refused before decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ccedit import resources
from ccedit.cli import main
from ccedit.errors import UserError
from ccedit.resources import MemoryEstimate, check_memory, estimate_edit_memory
from tests.conftest import VIDEOS, require
from tests.test_cli_safety import one_error_line

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1", "structure.cache_dir=null"]


def _estimate(**changes) -> MemoryEstimate:
    settings = dict(num_frames=16, size=(128, 224), source_size=(360, 640), window_length=16)
    return estimate_edit_memory(**{**settings, **changes})


def test_per_frame_terms_grow_with_the_frames_and_window_terms_with_the_window():
    short, long = _estimate(), _estimate(num_frames=64)
    for term in ("frames", "structure", "latents"):
        assert long.host[term] == 4 * short.host[term], term
    # The network sees one window at a time: a longer clip does not need more activation memory.
    assert long.host["activations"] == short.host["activations"]
    assert _estimate(num_frames=64, window_length=32).host["activations"] == 2 * short.host["activations"]
    assert _estimate(guidance=False).host["activations"] * 2 == short.host["activations"]
    # Doubling both sides quadruples every per-pixel term.
    big = _estimate(size=(256, 448))
    assert big.host["frames"] == 4 * short.host["frames"] and big.host["activations"] == 4 * short.host["activations"]
    on_gpu = _estimate(on_accelerator=True, weights_bytes=10)
    assert set(on_gpu.device) == {"latents", "activations", "weights"} and on_gpu.device["weights"] == 10


def test_the_refusal_names_the_option_that_reduces_the_largest_term():
    many_frames = _estimate(num_frames=100_000, window_length=1)
    with pytest.raises(UserError, match=r"reduce it with --frames, --height/--width") as error:
        check_memory(many_frames, available_host=10**9)
    assert "--force" in str(error.value)
    wide_window = _estimate(num_frames=64, window_length=64, size=(1024, 1024))
    with pytest.raises(UserError, match=r"reduce it with --window, --height/--width"):
        check_memory(wide_window, available_host=10**9)
    check_memory(_estimate(), available_host=10**12)  # fits: no error
    # On an accelerator, the device's own memory is what counts for the network.
    on_gpu = _estimate(size=(1024, 1024), on_accelerator=True)
    with pytest.raises(UserError, match="of accelerator memory"):
        check_memory(on_gpu, available_host=10**12, available_device=10**8)


@pytest.fixture
def kitten():
    return str(require(VIDEOS / "kitten.mp4"))


@pytest.fixture
def no_model_loads(monkeypatch):
    from ccedit.pipelines import loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("the model should not load"))


def test_an_edit_too_big_for_the_machine_is_refused_before_decoding(tmp_path, kitten, capsys, monkeypatch, no_model_loads):
    from ccedit import editing

    monkeypatch.setattr(resources, "available_host_memory", lambda: 50 * 10**6)
    monkeypatch.setattr(editing, "read_video", lambda *a, **k: pytest.fail("nothing should be decoded"))
    assert main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST]) == 2
    line = one_error_line(capsys)
    assert "of memory" in line and "--window" in line and "--force" in line, line
    assert main(["keyframe", kitten, "-o", str(tmp_path / "k.png"), "--model", "tiny", "--height", "2048", "--width", "2048"]) == 2  # fmt: skip
    assert "of memory" in one_error_line(capsys)
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
    assert "4x4000" in line and "--height and --width" in line, line
    # Within the side limit but still enormous: the memory guard, not a crash.
    args = ["edit", str(gif), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny", "--height", "8192",
            "--width", "8192", "--window", "16"]  # fmt: skip
    assert main(args) == 2
    assert "of memory" in one_error_line(capsys)
