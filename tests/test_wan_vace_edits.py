"""`ccedit edit --model wan-vace-tiny` end to end: a 150-frame clip, text-guided and keyframe-guided (images at
their frames and `auto@K`), written whole at the source's rate; a region edit keeps the source outside its mask
and hands the mask to VACE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccedit.cli import main
from ccedit.io import read_image, write_image
from ccedit.pipelines.time_grid import TimeGrid, vace_passes
from tests.conditioning import write_moving_disk_clip
from tests.test_region_edits import output_frames, working_source, write_box_mask

WAN = ["--model", "wan-vace-tiny", "--height", "64", "--width", "64", "--steps", "2", "--seed", "1",
       "structure.cache_dir=null", "output.frames=true"]


def sampled_frame(latent: int, frames: int, latents: int) -> int:
    """The pixel frame whose mask VACE's folding (nearest-exact interpolation in time) gives latent frame `latent`."""
    return int((latent + 0.5) * frames / latents)


@pytest.fixture(scope="module")
def clip150(tmp_path_factory):
    return write_moving_disk_clip(tmp_path_factory.mktemp("clip150"), num_frames=150)


@pytest.fixture
def transformer_calls(monkeypatch):
    """Every call of the Wan transformer during the edit: its latent frames and control states."""
    from diffusers import WanVACETransformer3DModel

    calls = []
    forward = WanVACETransformer3DModel.forward

    def recording(self, *args, **kwargs):
        if kwargs["hidden_states"].is_meta:  # the memory model's trace of a window call, not the edit's
            return forward(self, *args, **kwargs)
        calls.append({"frames": kwargs["hidden_states"].shape[2], "control": kwargs["control_hidden_states"].clone()})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(WanVACETransformer3DModel, "forward", recording)
    return calls


def test_a_150_frame_clip_is_edited_whole_in_fused_windows_at_the_source_rate(tmp_path, clip150, transformer_calls):
    out = tmp_path / "text.mp4"
    assert main(["edit", str(clip150), "--prompt", "a red car", "-o", str(out), *WAN]) == 0
    sidecar = json.loads((tmp_path / "text.mp4.json").read_text())
    frames = output_frames(out)
    assert frames.shape == (150, 64, 64, 3)
    assert sidecar["video"]["num_frames"] == 150 and sidecar["video"]["fps"] == sidecar["video"]["source_fps"]
    grid = TimeGrid(4)
    windows = grid.windows(150, 81, None)
    assert sidecar["windows"]["per_pass"] == [len(windows)] and len(windows) > 1
    # every call is one window of the native 81 frames (21 latent frames), never the whole clip
    assert {c["frames"] for c in transformer_calls} == {21}
    assert sidecar["prior"] == "none" and sidecar["dtype"] == "float32"


def test_keyframes_anywhere_and_auto_keyframes_are_kept_in_the_context(tmp_path, clip150, transformer_calls):
    source, _ = working_source(clip150, 150)
    # frames that VACE's mask folding reads (it samples one frame per latent frame, nearest in time): 21 and 100
    keyframes = {21: 255 - source[21], 100: np.roll(source[100], 16, axis=1)}
    specs = []
    for frame, image in keyframes.items():
        write_image(tmp_path / f"k{frame}.png", image)
        specs += ["--keyframe", f"{tmp_path / f'k{frame}.png'}@{frame}"]
    out = tmp_path / "keyed.mp4"
    assert main(["edit", str(clip150), "--prompt", "a red car", "-o", str(out), *WAN, *specs,
                 "--keyframe", "auto@131"]) == 0
    sidecar = json.loads((tmp_path / "keyed.mp4.json").read_text())
    assert [k["index"] for k in sidecar["keyframes"]] == [21, 100, 131]
    auto = read_image(tmp_path / "keyed.keyframe131.png")
    assert auto.shape == (64, 64, 3) and not np.array_equal(auto, source[131])  # edited, and saved for touch-up
    assert output_frames(out).shape == (150, 64, 64, 3)
    # a sparse pass over frames spread around the keyframes, then the whole clip with those frames kept
    (anchors, sparse), (_, dense) = vace_passes(150, 81, None, [21, 100, 131], None, TimeGrid(4))
    assert sidecar["windows"]["per_pass"] == [len(sparse), len(dense)] and {21, 100, 131} <= set(anchors)
    # VACE's mask channels say "keep" where a kept frame is the one the folding samples for a latent frame, and
    # "generate" elsewhere: the keyframes and anchors reached the context of the windows that hold them
    per_window = transformer_calls[-len(dense):]  # the dense pass's last step
    kept_latents = set()
    for window, call in zip(dense, per_window):
        mask = call["control"][0, 32:].float()
        for position, latent in enumerate(window.frames):
            if mask[:, position].max() == 0:
                kept_latents.add(latent)
    # (frames past the clip's end are its last frame repeated to 4k+1 = 153)
    expected = {j for j in range(39) if min(sampled_frame(j, 153, 39), 149) in anchors}
    assert kept_latents == expected and {j for j in range(39) if sampled_frame(j, 153, 39) in (21, 100, 131)} <= expected


def test_a_region_edit_keeps_the_source_outside_the_mask_and_hands_it_to_vace(tmp_path, transformer_calls):
    clip = write_moving_disk_clip(tmp_path / "clip", num_frames=45)
    mask = write_box_mask(tmp_path / "mask.png")
    out = tmp_path / "region.mp4"
    assert main(["edit", str(clip), "--prompt", "a red car", "-o", str(out), *WAN, "--mask", mask,
                 "mask.feather=2", "--window", "21", "--overlap", "8"]) == 0
    from ccedit.masks import MaskOptions, load_masks

    edited = output_frames(out)
    source, fit = working_source(clip, 45)
    masks = load_masks(mask, source, fit, MaskOptions(feather=2))
    outside = masks.soft == 0
    assert edited.shape == source.shape and outside.any() and masks.hard.any()
    assert np.array_equal(edited[outside], source[outside])  # every pixel beyond the feather band, every frame
    assert np.abs(edited[masks.hard].astype(int) - source[masks.hard]).mean() > 1
    # VACE's mask (the first window's context): each of its 64 channels is one pixel of every 8x8 block, 1 (generate)
    # inside the region (feather included) of the frame the folding samples, 0 (keep: the source) elsewhere
    generate = torch.from_numpy(masks.soft > 0)
    first = TimeGrid(4).windows(45, 21, 8)[0]
    folded = transformer_calls[0]["control"][0, 32:]
    for position, latent in enumerate(first.frames):
        frame = generate[sampled_frame(latent, 45, 12)]
        blocks = frame.reshape(8, 8, 8, 8)  # (block row, row in block, block column, column in block)
        for dy in range(8):
            for dx in range(8):
                assert torch.equal(folded[dy * 8 + dx, position].bool(), blocks[:, dy, :, dx])
    assert generate.any() and not generate.all()


def test_the_conditions_dump_shows_each_windows_context_video_mask_and_kept_keyframes(tmp_path):
    clip = write_moving_disk_clip(tmp_path / "clip", num_frames=30)
    source, _ = working_source(clip, 30)
    keyframe = 255 - source[9]
    write_image(tmp_path / "k.png", keyframe)
    mask = write_box_mask(tmp_path / "mask.png")
    out = tmp_path / "dump.mp4"
    assert main(["edit", str(clip), "--prompt", "a red car", "-o", str(out), *WAN, "--window", "21",
                 "--keyframe", f"{tmp_path / 'k.png'}@9", "--mask", mask, "--dump-conditions",
                 "windows.hierarchical=false"]) == 0
    folder = tmp_path / "dump.conditions"
    data = json.loads((folder / "conditions.json").read_text())
    grid = TimeGrid(4)
    (only,) = data["passes"]
    windows = grid.windows(30, 21, None)
    assert [w["frames"] for w in only["windows"]] == [
        [p for latent in w.frames for p in grid.pixels_of(latent) if p < 30] for w in windows]
    holding = [w for w in only["windows"] if 9 in w["frames"]]
    assert holding and all({"frame": 9, "position": w["frames"].index(9)} in w["keyframes"] for w in holding)
    for w in holding:
        # the context VACE took: the keyframe whole at its frame, the held maps inside the region elsewhere
        sub = folder / w["structure"]["canny"]["folder"]
        assert np.array_equal(read_image(sub / f"{w['frames'].index(9):03d}-frame00009.png"), keyframe)
        kept = read_image(folder / w["mask"]["folder"] / f"{w['frames'].index(9):03d}-frame00009.png")
        assert kept.max() == 0  # mask 0 (keep) over the whole keyframe
        other = w["frames"][0] if w["frames"][0] != 9 else w["frames"][1]
        region = read_image(folder / w["mask"]["folder"] / f"{w['frames'].index(other):03d}-frame{other:05d}.png")
        assert 0 < (region > 0).mean() < 1  # generated inside the region only


def test_two_structure_annotators_are_one_line_before_any_frame_is_decoded(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a frame was decoded for a refused edit")

    monkeypatch.setattr("ccedit.editing.prepare_clip", refuse)
    clip = write_moving_disk_clip(tmp_path / "clip", num_frames=5)
    assert main(["edit", str(clip), "--prompt", "a red car", "-o", str(tmp_path / "o.mp4"), *WAN,
                 "structure.annotators=[canny,depth]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "one structure annotator" in err[0]
    assert not list(tmp_path.glob("o*"))
