"""The memory model of the Wan-VACE kinds: the window call against an independent trace at the released sizes, the
whole estimate against a measured tiny edit, and what --dry-run prints for them."""

import pytest
import torch

from ccedit.cli import main
from ccedit.kinds import estimate_memory, kind_for
from ccedit.memory import traced_peak_bytes
from ccedit.memory_vace import PROMPT_TOKENS, RELEASED_TRANSFORMERS
from ccedit.pipelines.time_grid import TimeGrid
from ccedit.pipelines.vace_denoiser import window_prediction
from tests.test_cli_windows import moving_square_clip
from tests.test_memory import measure_edits

RELEASED_1_3B = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
RELEASED_14B = "Wan-AI/Wan2.1-VACE-14B-diffusers"


def independent_window_trace(config: dict, *, height: int, width: int, num_frames: int, calls: int = 2) -> int:
    """A meta-device trace of one `window_prediction` call as the pipeline makes it for a clip that is one native
    window: the transformer in bfloat16, latents `(calls, 16, latent frames, h, w)`, control latents `(1, 96, ...)`,
    the padded prompt's embeddings for both guidance halves."""
    from diffusers import WanVACETransformer3DModel

    with torch.device("meta"):
        transformer = WanVACETransformer3DModel(**config).to(torch.bfloat16)
    frames = TimeGrid(4).latents(num_frames)
    meta = dict(device="meta", dtype=torch.bfloat16)
    latents = torch.empty(calls, config["in_channels"], frames, height // 8, width // 8, **meta)
    control = torch.empty(1, config["vace_in_channels"], frames, height // 8, width // 8, **meta)
    text = torch.empty(calls, PROMPT_TOKENS, config["text_dim"], **meta)
    scale = torch.ones(len(config["vace_layers"]), **meta)
    return traced_peak_bytes(lambda: window_prediction(transformer, latents, torch.tensor(500.0, device="meta"), text,
                                                       control, scale))


@pytest.mark.parametrize("model,size,height,width", [
    ("wan-vace", "1.3B", 480, 832), (RELEASED_14B, "14B", 720, 1280),
])
def test_the_window_call_is_the_pipelines_transformer_call_at_the_released_sizes(model, size, height, width):
    """bfloat16, 81 frames (one native window): the estimate's window call is within 5% of the transformer call
    traced on its own (the estimate adds the window's slices and its fused prediction), and it is the released
    geometry's, from the hub id alone."""
    estimate = estimate_memory(model, height=height, width=width, num_frames=81, window_length=81,
                               dtype=torch.bfloat16, guidance=True, device_type="cuda")
    reference = independent_window_trace(RELEASED_TRANSFORMERS[size], height=height, width=width, num_frames=81)
    assert abs(estimate.working["window call"] / reference - 1) < 0.05, (estimate.working, reference)
    assert estimate.dtype == torch.bfloat16 and f"released Wan2.1-VACE {size}" in estimate.notes[0]
    # the transformer's weights in bfloat16: 2.1 G parameters with VACE's blocks for the 1.3B, 17 G for the 14B
    parameters = estimate.weights["transformer"] / 2
    assert (2.0e9 < parameters < 2.3e9) if size == "1.3B" else (1.6e10 < parameters < 1.8e10), parameters
    assert 5.5e9 < estimate.weights["text_encoder"] / 2 < 5.8e9  # UMT5-XXL's encoder, the same for both


def test_a_clips_length_adds_only_its_latents_not_working_memory():
    """Windows of the native length: a 300-frame clip needs the window call of an 81-frame one; only what the
    clip holds grows."""
    short, long = (estimate_memory("wan-vace-tiny", height=64, width=64, num_frames=n, window_length=81,
                                   dtype=torch.float32, device_type="cpu") for n in (81, 300))
    assert long.working == short.working
    latents = long.held["clip latents and scheduler state"] / short.held["clip latents and scheduler state"]
    assert latents == TimeGrid(4).latents(301) / TimeGrid(4).latents(81)  # 76 latent frames for 21


def test_the_tiny_estimate_is_within_15_percent_of_a_measured_tiny_edit():
    """A real wan-vace-tiny edit with guidance, in a fresh process on this machine's CPU (the device is the host),
    against the estimate on the CPU in float32."""
    [[peak]] = measure_edits([("wan-vace-tiny", [(64, 64, 34)], False)])
    estimate = estimate_memory("wan-vace-tiny", height=64, width=64, num_frames=34, window_length=81,
                               dtype=torch.float32, guidance=True, device_type="cpu")
    assert abs(estimate.peak_bytes / peak - 1) < 0.15, (estimate.stages, peak)


def test_the_wan_kinds_load_and_are_estimated_in_bfloat16_on_cuda_for_auto():
    from ccedit.config import load_edit_config
    from ccedit.memory_guard import estimate_network_memory

    cuda = torch.device("cuda")
    assert kind_for("wan-vace-tiny").main_dtype("auto", cuda) == torch.bfloat16
    assert kind_for("tiny").main_dtype("auto", cuda) == torch.float16
    cfg = load_edit_config(dotlist=["model.path=wan-vace-tiny"])
    estimate = estimate_network_memory(cfg, num_frames=9, height=64, width=64, keyframes=[], device=cuda)
    assert estimate.dtype == torch.bfloat16 and estimate.device_type == "cuda"


def test_the_dry_run_prints_the_wan_estimate(tmp_path, capsys):
    """The transformer's estimate, not a UNet's (before, an SD-1.5 stand-in of about 8 GiB); a hub id of the 14B
    release is estimated at its geometry, offline."""
    clip = moving_square_clip(tmp_path / "in.mp4", frames=16)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), "--model", "wan-vace-tiny", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "weights: transformer " in printed and "unet" not in printed and "note:" not in printed, printed
    assert "window call" in printed and "context encoding" in printed
    assert float(printed.split("estimated peak accelerator memory: ")[1].split(" GiB")[0]) < 0.1, printed

    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), "--dry-run", f"model.path={RELEASED_14B}",
                 "model.dtype=bfloat16"]) == 0
    printed = capsys.readouterr().out
    assert "unet" not in printed and "estimated for the released Wan2.1-VACE 14B" in printed, printed
    assert float(printed.split("estimated peak accelerator memory: ")[1].split(" GiB")[0]) > 40, printed
    assert not out.exists()
