"""Every condition reaches the networks as the user gave it, checked where the user enters (`ccedit edit`).

Each test edits a clip with `ccedit.cli.main`, captures what each network received (`tests/conditioning.py`) and
compares it with the same input computed independently from the user's files: values (grey levels kept), range,
frame pairing in every window and pass, keyframe index. The clip is a folder of distinct synthetic frames with
grey-level content, so no two frames' maps are alike and a map paired with the wrong frame shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccedit.annotators import Annotator, build_annotator
from ccedit.annotators.maps import hold
from ccedit.cli import main
from ccedit.io import fit_frames, read_image, read_video, write_image
from tests.conditioning import (
    capture_network_inputs,
    check_controlnet_pairing,
    correlation,
    frame_identity,
    held_unit,
    initial_noise,
    register_annotator,
    write_moving_disk_clip,
)

SIZE = (64, 64)
SEED = 5
FAST = ["--model", "tiny", "--steps", "1", "--height", str(SIZE[0]), "--width", str(SIZE[1]), "--seed", str(SEED),
        "structure.cache_dir=null"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return write_moving_disk_clip(tmp_path_factory.mktemp("clip"))


def source_frames(folder, num_frames: int, mode: str = "crop") -> np.ndarray:
    """The frames an edit works on, read and fitted here rather than by the edit."""
    frames = read_video(folder, num_frames=num_frames).frames
    return fit_frames(frames, SIZE, mode)[0]


class SoftLuma(Annotator):
    """A soft-edge-like float annotator: blurred luminance, many grey levels (no weights to download)."""

    name = "soft_luma"

    def _annotate_batch(self, frames):
        luma = self._frames_to_tensor(frames).mean(1, keepdim=True)
        return torch.nn.functional.avg_pool2d(luma, 5, stride=1, padding=2, count_include_pad=False) * 0.8 + 0.1


@pytest.fixture
def soft_luma(monkeypatch):
    register_annotator(monkeypatch, SoftLuma)
    return SoftLuma


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory):
    from tests.annotators.test_depth import save_tiny_dpt

    return save_tiny_dpt(tmp_path_factory.mktemp("dpt"))


def test_grey_level_depth_reaches_the_hint_encoder_unquantised_and_paired(tmp_path, clip_folder, tiny_dpt, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(out), *FAST, "--frames", "12",
                 "--window", "8", "--overlap", "2", "--structure", "depth_dpt",
                 f"structure.options.depth_dpt.model={tiny_dpt}"]) == 0
    (inputs,) = seen
    expected = build_annotator("depth_dpt", model=tiny_dpt)(source_frames(clip_folder, 12))
    received = inputs.hint_encoder_maps()
    assert received.shape == (12, 3, *SIZE)
    assert torch.allclose(received, held_unit(expected), atol=1e-6)  # quantised once, to uint8, and no further
    levels = torch.unique(received).numel()
    assert levels == torch.unique(hold(expected)).numel() and levels > 50
    for k in range(12):
        assert correlation(received[k], expected[k]) > 0.99
    # Two windows; every ControlNet row carries the map of the frame its latent shows.
    assert check_controlnet_pairing(inputs, held_unit(expected), initial_noise(SEED, 12, *SIZE)) == 2 * 2 * 8


def test_depth_is_the_models_own_estimator_with_ccedits_normalisation(tmp_path, clip_folder, monkeypatch):
    from ccedit import CCEditPipeline
    from ccedit.pipelines.tiny import tiny_components
    from ccedit.schedulers import build_scheduler
    from tests.annotators.test_depth import save_tiny_dpt

    model = tmp_path / "model"
    CCEditPipeline(**{**tiny_components(keyframe=True), "scheduler": build_scheduler("euler")}).save_pretrained(model)
    save_tiny_dpt(model / "depth_estimator")
    seen = capture_network_inputs(monkeypatch)
    args = ["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--model", str(model),
            "--frames", "6", "--structure", "depth"]
    assert main(args) == 0
    frames = source_frames(clip_folder, 6)
    expected = build_annotator("depth_dpt", model=str(model / "depth_estimator"), preprocess="ccedit")(frames)
    received = seen[0].hint_encoder_maps()
    assert torch.allclose(received, held_unit(expected), atol=1e-6)
    assert torch.unique(received).numel() > 50


def test_two_annotators_each_feed_their_own_controlnet(tmp_path, clip_folder, soft_luma, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--frames", "6",
                 "--structure", "canny,soft_luma", "structure.controlnets=[null,tiny]"]) == 0
    (inputs,) = seen
    frames = source_frames(clip_folder, 6)
    canny, soft = build_annotator("canny")(frames), SoftLuma()(frames)
    assert torch.equal(inputs.hint_encoder_maps(0), held_unit(canny))
    assert torch.allclose(inputs.hint_encoder_maps(1), held_unit(soft), atol=1e-6)
    assert torch.unique(inputs.hint_encoder_maps(1)).numel() > 50  # float maps keep their grey levels
    noise = initial_noise(SEED, 6, *SIZE)
    assert check_controlnet_pairing(inputs, held_unit(canny), noise, net=0) == 2 * 6
    assert check_controlnet_pairing(inputs, held_unit(soft), noise, net=1) == 2 * 6


def test_pad_mode_maps_see_the_picture_and_are_zero_in_the_letterbox(tmp_path, clip_folder, soft_luma, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--frames", "4",
                 "--structure", "soft_luma", "video.resize_mode=pad"]) == 0
    received = seen[0].hint_encoder_maps()
    frames, fit = fit_frames(read_video(clip_folder, num_frames=4).frames, SIZE, "pad")
    top, left, h, w = fit.pad_box
    assert (top, h) != (0, SIZE[0])  # 96x128 into 64x64: bars above and below
    picture = SoftLuma()(np.ascontiguousarray(frames[:, top:top + h, left:left + w]))
    assert torch.allclose(received[:, :, top:top + h, left:left + w], held_unit(picture), atol=1e-6)
    inside = torch.zeros(SIZE, dtype=torch.bool)
    inside[top:top + h, left:left + w] = True
    assert float(received[:, :, ~inside].abs().max()) == 0.0
    assert float(received[:, :, inside].min()) > 0.05  # the picture's maps are not zero anywhere


def _keyframe_image(clip_folder, index: int) -> np.ndarray:
    """An 'edited' keyframe: the frame at `index`, inverted, so it differs from every source frame."""
    return 255 - source_frames(clip_folder, index + 1)[index]


def _vae_round_trip(pipe, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The keyframe's scaled latent (posterior mean) and its decoding, computed here with the edit's own VAE (its
    class's methods: the instance's `encode` records its inputs)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        latent = type(pipe.vae).encode(pipe.vae, x).latent_dist.mode() * pipe.vae.config.scaling_factor
        decoded = type(pipe.vae).decode(pipe.vae, latent / pipe.vae.config.scaling_factor).sample
    return latent, ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def test_an_off_centre_keyframe_reaches_the_appearance_branch_and_is_pinned(tmp_path, clip_folder, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    image = _keyframe_image(clip_folder, 2)
    keyframe = tmp_path / "key.png"
    write_image(keyframe, image)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(out), *FAST, "--frames", "8",
                 "--keyframe", f"{keyframe}@2", "output.frames=true", "--dump-conditions"]) == 0
    (inputs,) = seen
    # The VAE encoded the user's PNG, in [-1, 1], channels first, RGB.
    expected_pixels = torch.from_numpy(read_image(keyframe)).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert torch.allclose(inputs.vae_inputs[0], expected_pixels, atol=1e-6)
    latent, round_trip = _vae_round_trip(inputs.pipe, image)
    # The appearance encoder took that latent (a row per keyframe and timestep).
    assert inputs.appearance_inputs and all(torch.allclose(rows, latent.expand_as(rows), atol=1e-5)
                                            for rows in inputs.appearance_inputs)
    # The keyframe is pinned: the output shows its VAE round trip at frame 2, and only there.
    written = [read_image(p) for p in sorted((tmp_path / "o_frames").glob("*.png"))]
    diff = [np.abs(f.astype(int) - round_trip.astype(int)).mean() for f in written]
    assert diff[2] < 1.0 and min(diff[:2] + diff[3:]) > 10
    # The dump shows the keyframe as the branch received it, and at its frame in the window.
    dump = json.loads((tmp_path / "o.conditions" / "conditions.json").read_text())
    (single,) = dump["passes"]
    assert [k["frame"] for k in single["keyframes"]] == [2]
    assert np.abs(read_image(tmp_path / "o.conditions" / single["keyframes"][0]["image"]).astype(int)
                  - round_trip.astype(int)).max() <= 1
    for window in single["windows"]:
        for entry in window["keyframes"]:
            assert entry["frame"] == 2 and window["frames"][entry["position"]] == 2


def test_sdedit_encodes_the_source_frames_in_order(tmp_path, clip_folder, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--frames", "10",
                 "--steps", "4", "sampling.strength=0.6", "--dump-conditions"]) == 0
    frames = source_frames(clip_folder, 10)
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(torch.cat(seen[0].vae_inputs), expected, atol=1e-6)
    dump = json.loads((tmp_path / "o.conditions" / "conditions.json").read_text())
    assert dump["sdedit"]["strength"] == 0.6 and dump["sdedit"]["frames"] == 10
    assert 0 < dump["sdedit"]["first_timestep"] < 999
    for k in (0, 9):
        assert np.array_equal(read_image(tmp_path / "o.conditions" / "sdedit" / f"frame{k:05d}.png"), frames[k])


def test_the_dump_of_a_long_windowed_keyframe_edit_pairs_maps_with_frames(tmp_path, clip_folder, monkeypatch):
    """40 frames in windows of 8 with a keyframe at 13: a sparse pass, then reflect-padded dense windows."""
    seen = capture_network_inputs(monkeypatch)
    keyframe = tmp_path / "key.png"
    write_image(keyframe, _keyframe_image(clip_folder, 13))
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--frames", "40",
                 "--window", "8", "--overlap", "2", "--keyframe", f"{keyframe}@13", "--dump-conditions",
                 "--side-by-side"]) == 0
    canny = held_unit(build_annotator("canny")(source_frames(clip_folder, 40)))
    folder = tmp_path / "o.conditions"
    dump = json.loads((folder / "conditions.json").read_text())
    sparse, dense = dump["passes"]
    assert 13 in sparse["frames"] and dense["frames"] == list(range(40))
    assert [k["frame"] for k in sparse["keyframes"]] == [13]
    assert [k["frame"] for k in dense["keyframes"]] == sparse["frames"]  # the sparse pass's frames lead the dense one
    padded = 0
    for p, record in enumerate(dump["passes"]):
        for window in record["windows"]:
            maps = window["structure"]["canny"]
            images = sorted((folder / maps["folder"]).glob("*.png"))
            assert [int(i.stem.split("frame")[1]) for i in images] == window["frames"]
            for frame, path in zip(window["frames"], images):
                assert np.array_equal(read_image(path)[..., 0], (canny[frame, 0] * 255).round().byte().numpy())
            padded += len(set(window["frames"])) < len(window["frames"])
            for entry in window["keyframes"]:
                assert window["frames"][entry["position"]] == entry["frame"]
                assert entry["frame"] in [k["frame"] for k in record["keyframes"]]
        if p == 0:
            assert any(e["frame"] == 13 for w in record["windows"] for e in w["keyframes"])
    assert padded  # some window reached past the clip's ends and was reflect-padded
    # What the networks received agrees: every ControlNet row, in both passes, went with its own frame's latent.
    (inputs,) = seen
    rows = check_controlnet_pairing(inputs, canny, initial_noise(SEED, 40, *SIZE))
    windows = sum(len(r["windows"]) for r in dump["passes"])
    assert rows == 2 * sum(len(w["frames"]) for r in dump["passes"] for w in r["windows"]) and windows >= 6


def test_sparsectrl_takes_the_keyframe_latent_and_mask_at_its_frame(tmp_path, clip_folder, monkeypatch):
    seen = capture_network_inputs(monkeypatch)
    image = _keyframe_image(clip_folder, 1)
    keyframe = tmp_path / "key.png"
    write_image(keyframe, image)
    args = ["edit", str(clip_folder), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--frames", "6",
            "--model", "animatediff-tiny", "--keyframe", f"{keyframe}@1"]
    assert main(args) == 0
    (inputs,) = seen
    latent, _ = _vae_round_trip(inputs.pipe, image)
    noise = initial_noise(SEED, 6, *SIZE)
    assert inputs.sparse_calls
    for sample, condition, mask in inputs.sparse_calls:
        for b in range(sample.shape[0]):
            frames = frame_identity(sample[b].transpose(0, 1), noise)
            for position, frame in enumerate(frames):
                acting = frame == 1
                assert float(mask[b, 0, position].min()) == float(mask[b, 0, position].max()) == float(acting)
                if acting:
                    assert torch.allclose(condition[b, :, position], latent[0], atol=1e-5)
                else:
                    assert float(condition[b, :, position].abs().max()) == 0.0


class Broken(Annotator):
    name = "broken"

    def __init__(self, fault: str = "nan", **kwargs):
        super().__init__(**kwargs)
        self.fault = fault

    def __call__(self, frames):
        t, h, w = frames.shape[:3]
        maps = torch.full((t, 3, h, w), 0.5)
        if self.fault == "nan":
            maps[1, 0, 3, 3] = float("nan")
        elif self.fault == "range":
            maps[0] = 3.0
        elif self.fault == "frames":
            maps = maps[:-1]
        elif self.fault == "size":
            maps = maps[..., :-8]
        return maps


@pytest.mark.parametrize(("fault", "words"), [("nan", "non-finite"), ("range", "outside [0, 1]"),
                                             ("frames", "3 maps for 4 frames"), ("size", "56x64 for frames of 64x64")])
def test_an_annotator_breaking_the_contract_is_one_line_before_denoising(tmp_path, clip_folder, monkeypatch, capsys,
                                                                         fault, words):
    import ccedit.pipelines.pipeline_ccedit as pipeline_module

    register_annotator(monkeypatch, Broken)

    def no_denoising(*args, **kwargs):
        raise AssertionError("denoising started")

    monkeypatch.setattr(pipeline_module, "denoise", no_denoising)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(clip_folder), "--prompt", "x", "-o", str(out), *FAST, "--frames", "4",
                 "--structure", "broken", f"structure.options.broken.fault={fault}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "'broken'" in err[0] and words in err[0], err
    assert not out.exists()
