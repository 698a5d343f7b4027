"""The memory model: its tensor accounting, the estimate against measured peaks, the 16 GB budget, --dry-run."""

import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ccedit.cli import main
from ccedit.memory import LiveTensorBytes, estimate_edit_memory, traced_peak_bytes
from ccedit.kinds import load_pipeline
from ccedit.pipelines import clip_denoiser
from ccedit.pipelines.windows import plan_passes
from tests.conftest import memory_estimate
from tests.test_cli_windows import moving_square_clip

ROOT = Path(__file__).resolve().parents[1]


def test_live_tensor_bytes_follows_allocations_frees_and_views():
    x = torch.empty(1000, device="meta")  # 4000 bytes, made outside: not counted

    def fn():
        a = x * 2  # +4000
        b = a.view(10, 100)  # a view: nothing new, and keeps a's storage alive
        del a
        c = b + 1  # +4000 -> 8000
        del b, c  # back to 0
        d = torch.empty(500, device="meta")  # +2000
        return d

    tracker = LiveTensorBytes()
    with tracker:
        out = fn()
        assert tracker.live == 2000
    assert tracker.peak == 8000
    del out
    assert traced_peak_bytes(fn) == 8000


MEASURE = textwrap.dedent("""
    import json, sys, numpy as np, torch
    from ccedit.memory import measured_peak_bytes
    from ccedit.kinds import kind_for, load_pipeline
    torch.set_num_threads(1)
    results = []
    for model, sizes, keyframe in json.loads(sys.argv[1]):
        scheduler = kind_for(model).conventions.scheduler  # the sampler an edit with the model runs
        pipe = load_pipeline(model, device="cpu", dtype="float32", scheduler=scheduler)
        weights = sum(p.numel() * p.element_size() for c in pipe.components.values()
                      if isinstance(c, torch.nn.Module) for p in c.parameters())
        out = []
        for h, w, t in sizes:
            video = np.random.default_rng(0).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
            maps = torch.rand(t, 3, h, w)
            key = {"keyframe": video[t // 2]} if keyframe else {}
            run = lambda: pipe("a", video, [maps], num_inference_steps=1, progress=False, **key)
            run()  # first call: lazily made kernels and caches are not the edit's
            out.append(weights + measured_peak_bytes(run))
        results.append(out)
        del pipe, run
    print(json.dumps(results))
""")


def measure_edits(jobs: list[tuple[str, list[tuple[int, int, int]], bool]]) -> list[list[int]]:
    """Measured in one fresh process, for each (model, sizes, keyframe) job: the allocator's high-water mark of a
    whole edit with guidance (one step) at each size, plus the weights, on this machine's CPU (where the device is
    the host)."""
    result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(jobs)], cwd=ROOT,
                            capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(result.stdout.strip().splitlines()[-1])


# A converted model of a size that is none of the named geometries (saved by `custom_model`).
CUSTOM_GEOMETRY = dict(model_channels=32, channel_mult=[1, 1, 2], num_res_blocks=1, attention_resolutions=[1, 2],
                       num_heads=2, context_dim=32)
# (model, sizes, keyframe) of each measurement; "custom" stands for the `custom_model` folder.
MEASURED = {
    "tiny": ("tiny", [(64, 96, 6), (128, 192, 12)], True),
    "open trident": ("animatediff-tiny", [(64, 96, 32)], True),  # a size where denoising is the peak
    "custom": ("custom", [(64, 96, 24)], True),
}


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory) -> str:
    from ccedit.models.geometry import Geometry, build_network_modules
    from ccedit.pipelines import CCEditPipeline
    from ccedit.pipelines.tiny import tiny_components

    torch.manual_seed(0)
    components = {**tiny_components(keyframe=True), **build_network_modules(Geometry(**CUSTOM_GEOMETRY), keyframe=True)}
    folder = tmp_path_factory.mktemp("custom") / "model"
    CCEditPipeline(**components).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def measured_peaks(custom_model) -> dict[str, list[int]]:
    """The peaks of MEASURED, by name, from one process: an interpreter start and the imports are most of the cost."""
    jobs = [(custom_model if model == "custom" else model, sizes, keyframe) for model, sizes, keyframe in MEASURED.values()]
    return dict(zip(MEASURED, measure_edits(jobs)))


def test_estimate_is_within_15_percent_of_the_measured_peak(measured_peaks):
    _, sizes, _ = MEASURED["tiny"]
    for (h, w, t), peak in zip(sizes, measured_peaks["tiny"], strict=True):
        estimate = estimate_edit_memory(height=h, width=w, num_frames=t, dtype=torch.float32, keyframe=True,
                                        geometry="tiny", device_type="cpu")
        assert abs(estimate.peak_bytes / peak - 1) < 0.15, (h, w, t, estimate.stages, peak)


def test_the_open_trident_is_estimated_from_its_own_networks(tmp_path, capsys, measured_peaks):
    """AnimateDiff motion modules and SparseCtrl: the estimate traces them (no CCEdit stand-in of another size),
    at a size where denoising is the peak; the dry run prints the same estimate."""
    from ccedit.kinds import model_skeleton

    [(h, w, t)] = MEASURED["open trident"][1]
    [peak] = measured_peaks["open trident"]
    estimate = estimate_edit_memory(height=h, width=w, num_frames=t, dtype=torch.float32, keyframe=True,
                                    networks=model_skeleton("animatediff-tiny"), device_type="cpu")
    assert estimate.stage == "denoising" and abs(estimate.peak_bytes / peak - 1) < 0.15, (estimate.stages, peak)

    clip = moving_square_clip(tmp_path / "in.mp4", frames=16)
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", "animatediff-tiny",
                 "--keyframe", "auto@8", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    gib = float(printed.split("estimated peak accelerator memory: ")[1].split(" GiB")[0])
    assert gib < 0.2, printed  # the SD-1.5-sized stand-in needed about 7 GiB in float32


def test_a_model_folder_is_estimated_from_its_own_configs(tmp_path, monkeypatch, custom_model, measured_peaks):
    """A converted model of a size that is none of the named geometries: weights exactly those loaded (also from
    the hub cache), and the peak within 15% of the measured one."""
    from ccedit.kinds import model_skeleton

    model = custom_model
    skeleton = model_skeleton(model)
    loaded = load_pipeline(model, device="cpu", dtype="float32")
    for name in ("unet", "temporal", "appearance", "vae", "text_encoder"):
        expected = sum(p.numel() for p in getattr(loaded, name).parameters())
        assert sum(p.numel() for p in getattr(skeleton, name).parameters()) == expected, name
    assert all(p.is_meta for p in skeleton.unet.parameters())

    # the same model as a hub id in the local cache: read from there, with nothing fetched
    import shutil

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # read at call time, not the env's
    commit = "0" * 40
    repo = tmp_path / "cache" / "models--someone--custom-ccedit"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    cached = model_skeleton("someone/custom-ccedit")
    assert sum(p.numel() for p in cached.unet.parameters()) == sum(p.numel() for p in skeleton.unet.parameters())
    assert model_skeleton("someone/not-cached") is None

    [(h, w, t)] = MEASURED["custom"][1]
    [peak] = measured_peaks["custom"]
    estimate = estimate_edit_memory(height=h, width=w, num_frames=t, dtype=torch.float32, keyframe=True,
                                    networks=skeleton, device_type="cpu")
    assert abs(estimate.peak_bytes / peak - 1) < 0.15, (estimate.stages, peak)


def test_the_default_keyframe_edit_fits_in_16_gb():
    estimate = memory_estimate(height=512, width=768, num_frames=17, dtype=torch.float16, guidance=True,
                               keyframe=True, geometry="sd15")
    assert 4 < estimate.peak_gb <= 16, estimate.lines()
    # the released networks' weights in float16: UNet 0.86 G parameters, ControlNet 0.36 G
    assert 1.6e9 < estimate.weights["unet"] < 1.8e9 and 0.65e9 < estimate.weights["controlnet"] < 0.75e9
    # more frames per window, more memory; offloading the other stages' networks, less
    longer = memory_estimate(height=512, width=768, num_frames=34, dtype=torch.float16, keyframe=True)
    windowed = memory_estimate(height=512, width=768, num_frames=34, window_length=17, dtype=torch.float16,
                               keyframe=True)
    offload = memory_estimate(height=512, width=768, num_frames=17, dtype=torch.float16, keyframe=True,
                              cpu_offload=True)
    assert longer.stages["denoising"] > windowed.stages["denoising"] > estimate.stages["denoising"] * 0.99
    assert offload.peak_bytes < estimate.peak_bytes


def test_the_peak_stage_breaks_down_into_weights_held_tensors_and_one_calls_working_memory():
    estimate = memory_estimate(height=512, width=768, num_frames=17, dtype=torch.float16, keyframe=True,
                               geometry="sd15", vae_slicing=True)
    assert estimate.stage == "denoising" and sum(estimate.peak_terms().values()) == estimate.peak_bytes
    networks = ("unet", "temporal", "controlnet", "appearance", "vae", "text_encoder")
    assert estimate.peak_terms() == {"weights": sum(estimate.weights[k] for k in networks), **estimate.held,
                                     "window call": estimate.working["window call"]}
    # Without slicing the VAE decodes 8 frames at once, which makes decoding the peak.
    unsliced = memory_estimate(height=512, width=768, num_frames=17, dtype=torch.float16, keyframe=True,
                               geometry="sd15")
    assert unsliced.stage == "decoding" and unsliced.peak_terms()["VAE decode"] > 4 * estimate.working["VAE decode"]


def test_a_sliced_vae_decode_is_within_15_percent_of_the_measured_peak():
    from ccedit.memory import measured_peak_bytes

    vae = load_pipeline("tiny", device="cpu", dtype="float32").vae
    vae.enable_slicing()
    latents = torch.randn(8, 4, 32, 48)
    with torch.no_grad():
        vae.decode(latents)  # first call: lazily made kernels and caches are not the decode's
        measured = measured_peak_bytes(lambda: vae.decode(latents).sample)
    estimate = estimate_edit_memory(height=256, width=384, num_frames=8, dtype=torch.float32, geometry="tiny",
                                    device_type="cpu", vae_slicing=True)
    assert abs(estimate.working["VAE decode"] / measured - 1) < 0.15, (estimate.working, measured)


@pytest.mark.parametrize("frames,length,keyframes", [(20, 8, [5]), (20, 8, []), (6, 8, [2])])
def test_plan_passes_is_what_the_pipeline_runs(frames, length, keyframes):
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    video = np.zeros((frames, 32, 32, 3), dtype=np.uint8)
    maps = torch.zeros(frames, 3, 32, 32)
    keyframe = [video[k] for k in keyframes] or None
    result = pipe("a", video, [maps], keyframe=keyframe, keyframe_index=keyframes or None, num_inference_steps=1,
                  guidance_scale=1, window_length=length, output_type="latent", progress=False)
    assert result.windows == [len(w) for _, w in plan_passes(frames, length, None, keyframes)]


def argument_structure(value):
    """What a call's argument is, without its sizes or device: a tensor's rank and dtype, a sequence's items, a
    dataclass's fields, else its type (a meta tensor and the real one of the same rank and dtype read the same)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.ndim, value.dtype)
    if isinstance(value, (list, tuple, range)):
        return ("sequence", [argument_structure(v) for v in value])
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, {f.name: argument_structure(getattr(value, f.name))
                                       for f in dataclasses.fields(value)})
    return type(value).__name__


@pytest.mark.parametrize("model", ["tiny", "animatediff-tiny"])  # appearance residuals per timestep; SparseCtrl
def test_the_memory_model_traces_the_window_call_an_edit_makes(model, monkeypatch):
    """The estimate's window term is a trace of `clip_denoiser.window_prediction`, the call an edit makes on each
    window: both go through it, with arguments of the same names, ranks and dtypes."""
    from ccedit.kinds import model_skeleton

    real = clip_denoiser.window_prediction
    calls = []

    def recording(*args, **kwargs):
        arguments = inspect.signature(real).bind(*args, **kwargs).arguments
        calls.append({name: argument_structure(value) for name, value in arguments.items()})
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_denoiser, "window_prediction", recording)
    h, w, t = 64, 96, 6
    pipe = load_pipeline(model, device="cpu", dtype="float32")
    video = np.random.default_rng(0).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    pipe("a", video, [torch.rand(t, 3, h, w)], keyframe=video[t // 2], num_inference_steps=1, window_length=t,
         output_type="latent", progress=False)
    assert len(calls) == 1, "a one-step edit of one window calls the network once, both guidance halves batched"
    estimate_edit_memory(height=h, width=w, num_frames=t, dtype=torch.float32, keyframe=True,
                         networks=model_skeleton(model), device_type="cpu")
    assert len(calls) == 2, "the memory model traced the window call through `window_prediction`"
    edit_call, traced_call = calls
    assert traced_call == edit_call


def test_dry_run_prints_the_plan_and_memory_without_loading_a_model(tmp_path, capsys, monkeypatch):
    import ccedit.kinds as kinds

    monkeypatch.setattr(kinds, "load_pipeline", lambda *a, **k: pytest.fail("--dry-run loaded a model"))
    clip = moving_square_clip(tmp_path / "in.mp4", frames=40)
    out = tmp_path / "out.mp4"
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(out), "--model", "tiny", "--steps", "2",
                 "--window", "16", "--keyframe", "auto@10", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "clip: 40 frames at " in printed
    windows = [len(w) for _, w in plan_passes(40, 16, None, [10])]
    assert f"passes: 2 (windows per pass: {windows[0]}, {windows[1]})" in printed
    assert "estimated peak accelerator memory:" in printed and "denoising" in printed
    assert "memory guard: " in printed and "of the computer's memory" in printed
    assert not out.exists()


def test_a_damaged_model_folder_is_refused_in_one_line_before_decoding(tmp_path, capsys, monkeypatch):
    """The memory guard reads the model's configs before any frame is decoded: a missing or malformed one is the
    user's to fix, said in one line."""
    import ccedit.io as io
    from tests.test_cli_safety import one_error_line

    model = tmp_path / "model"
    for sub in ("unet", "temporal", "controlnet", "vae", "text_encoder"):
        (model / sub).mkdir(parents=True)
    (model / "unet" / "config.json").write_text("{not json")
    clip = moving_square_clip(tmp_path / "in.mp4", frames=8)
    monkeypatch.setattr(io, "read_video", lambda *a, **k: pytest.fail("decoded frames for a broken model"))
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", str(model)]) == 2
    line = one_error_line(capsys)
    assert "unet" in line and "not a valid JSON file" in line

    (model / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    assert main(["edit", str(clip), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model", str(model)]) == 2
    assert "temporal" in one_error_line(capsys)  # its config.json is missing
