"""ccedit's Wan-VACE pipeline: one window equals diffusers' `WanVACEPipeline`; several windows fuse in latent time;
keyframes reach the transformer through VACE's context at their frames, in every window that holds them."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanVACEPipeline

from ccedit.pipelines.pipeline_wan_vace import WanVACEEditPipeline
from ccedit.pipelines.time_grid import TimeGrid, vace_passes
from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts

SIZE = 32
STEPS = 3


def unipc_flow():
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


@pytest.fixture(scope="module")
def parts():
    parts = tiny_wan_vace_parts()
    parts["scheduler"] = unipc_flow()
    return parts


def distinct_frames(num_frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, SIZE, SIZE, 3), dtype=np.uint8)


def as_maps(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def pil(frames: np.ndarray) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(f) for f in frames]


@pytest.mark.parametrize("with_keyframe", [False, True], ids=["structure", "keyframe"])
@pytest.mark.parametrize("scheduler", [unipc_flow, lambda: FlowMatchEulerDiscreteScheduler(shift=5.0)],
                         ids=["unipc", "euler"])
def test_one_window_over_81_frames_equals_diffusers_wan_vace(parts, with_keyframe, scheduler):
    parts = {**parts, "scheduler": scheduler()}
    num_frames, frame = 81, 37  # the keyframe off the centre (40)
    maps, source = distinct_frames(num_frames, 0), distinct_frames(num_frames, 1)
    keyframe = distinct_frames(1, 2)[0]
    noise = torch.randn(1, 16, 21, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
    # diffusers as its users call it: the context video and its mask, the keyframe placed by hand
    video, mask = maps.copy(), np.full_like(maps, 255)
    if with_keyframe:
        video[frame], mask[frame] = keyframe, 0
    expected = WanVACEPipeline(**parts)(
        prompt="a red car", negative_prompt="blurry", video=pil(video), mask=pil(mask), height=SIZE, width=SIZE,
        num_frames=num_frames, num_inference_steps=STEPS, guidance_scale=5.0, latents=noise.clone(),
        output_type="latent").frames
    ours = WanVACEEditPipeline(**parts)(
        "a red car", source, [as_maps(maps)], negative_prompt="blurry", keyframe=[keyframe] if with_keyframe else None,
        keyframe_index=[frame] if with_keyframe else None, num_inference_steps=STEPS, guidance_scale=5.0,
        latents=noise.clone(), output_type="latent", progress=False).frames
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)
    # the inputs carry information: the keyframe moved the result
    if with_keyframe:
        plain = WanVACEEditPipeline(**parts)(
            "a red car", source, [as_maps(maps)], negative_prompt="blurry", num_inference_steps=STEPS,
            guidance_scale=5.0, latents=noise.clone(), output_type="latent", progress=False).frames
        assert (plain - ours).abs().max() > 1e-3


class TransformerCalls:
    """What the transformer receives, call by call."""

    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append({k: kwargs[k].detach().clone() for k in ("hidden_states", "control_hidden_states")})

    def remove(self):
        self.handle.remove()


def run_recorded(parts, frames, maps, **kwargs):
    pipe = WanVACEEditPipeline(**parts)
    calls = TransformerCalls(pipe.transformer)
    out = pipe("a red car", frames, [as_maps(maps)], num_inference_steps=1, guidance_scale=1.0, progress=False,
               output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs).frames
    calls.remove()
    return out, calls.calls


def test_a_long_clip_runs_in_fused_windows_of_latent_frames_each_given_its_own_context(parts):
    num_frames = 61  # 16 latent frames; windows of 21 pixel frames are 6 latent frames
    frames, maps = distinct_frames(num_frames, 4), distinct_frames(num_frames, 5)
    grid = TimeGrid(4)
    windows = grid.windows(num_frames, 21, 8)
    assert len(windows) > 2 and all(len(w) == 6 for w in windows)
    _, whole = run_recorded(parts, frames, maps)
    _, windowed = run_recorded(parts, frames, maps, window_length=21, window_overlap=8)
    assert len(whole) == 1 and len(windowed) == len(windows)
    clip_control = whole[0]["control_hidden_states"]
    covered = set()
    for window, call in zip(windows, windowed):
        index = list(window.frames)
        assert call["hidden_states"].shape[2] == 6
        # the window's context is the clip's at its latent frames, not the context of its frames encoded alone
        torch.testing.assert_close(call["control_hidden_states"], clip_control[:, :, index], rtol=0, atol=0)
        covered.update(index)
    assert covered == set(range(grid.latents(num_frames)))


def test_a_keyframe_reaches_the_transformer_at_its_latent_frame_in_every_window_that_holds_it(parts):
    num_frames, frame = 61, 26  # latent frame 7, off every window's centre
    frames, maps = distinct_frames(num_frames, 6), distinct_frames(num_frames, 7)
    keyframe = distinct_frames(1, 8)[0]
    grid = TimeGrid(4)
    latent = grid.latent_of(frame)
    windows = grid.windows(num_frames, 21, 8)
    _, plain = run_recorded(parts, frames, maps, window_length=21, window_overlap=8)
    _, keyed = run_recorded(parts, frames, maps, window_length=21, window_overlap=8, keyframe=[keyframe],
                            keyframe_index=[frame], hierarchical=False)
    holding = 0
    for window, before, after in zip(windows, plain, keyed):
        changed = (before["control_hidden_states"] - after["control_hidden_states"]).abs().amax(dim=(0, 1, 3, 4)) > 0
        index = list(window.frames)
        if latent in index:
            holding += 1
            # the keyframe's own latent frame changes; nothing before it does (the VAE is causal)
            assert changed[index.index(latent)]
            assert not changed[: index.index(latent)].any()
        elif max(index) < latent:
            assert not changed.any()  # a window wholly before the keyframe sees the same context
    assert holding >= 1


def test_frame_counts_that_are_not_4k_plus_1_are_fitted_and_cut_back(parts):
    frames, maps = distinct_frames(10, 9), distinct_frames(10, 10)
    pipe = WanVACEEditPipeline(**parts)
    out = pipe("a red car", frames, [as_maps(maps)], num_inference_steps=1, guidance_scale=1.0, progress=False,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 10, SIZE, SIZE, 3) and out.frames.dtype == np.uint8
    assert out.windows == [1]


def test_hierarchical_keyframes_edit_spread_frames_first_and_keep_them_in_the_dense_pass(parts):
    num_frames, frame = 61, 26
    frames, maps = distinct_frames(num_frames, 6), distinct_frames(num_frames, 7)
    keyframe = distinct_frames(1, 8)[0]
    grid = TimeGrid(4)
    passes = vace_passes(num_frames, 21, 8, [frame], None, grid)
    (anchors, sparse), (dense_frames, dense) = passes
    assert frame in anchors and anchors[0] == 0 and anchors[-1] == num_frames - 1 and len(anchors) < num_frames
    assert max(b - a for a, b in zip(anchors, anchors[1:])) <= 21 - 8
    pipe = WanVACEEditPipeline(**parts)
    calls = TransformerCalls(pipe.transformer)
    out = pipe("a red car", frames, [as_maps(maps)], keyframe=[keyframe], keyframe_index=[frame], window_length=21,
               window_overlap=8, num_inference_steps=1, guidance_scale=1.0, progress=False,
               generator=torch.Generator().manual_seed(0))
    calls.remove()
    assert out.windows == [len(sparse), len(dense)] and out.frames.shape[1] == num_frames
    first = calls.calls[:len(sparse)]
    assert sum(c["hidden_states"].shape[2] for c in first[:1]) == grid.latents(grid.fitted(len(anchors)))
    # the dense pass keeps every anchor: its context differs from a pass with the keyframe alone at the latent
    # frames of the other anchors
    _, alone = run_recorded(parts, frames, maps, window_length=21, window_overlap=8, keyframe=[keyframe],
                            keyframe_index=[frame], hierarchical=False)
    dense_calls = calls.calls[len(sparse):]
    changed = set()
    for window, with_anchors, without in zip(dense, dense_calls, alone):
        differs = (with_anchors["control_hidden_states"] - without["control_hidden_states"]).abs().amax(
            dim=(0, 1, 3, 4)) > 0
        changed |= {f for f, d in zip(window.frames, differs.tolist()) if d}
    others = {grid.latent_of(a) for a in anchors if a != frame}
    assert others <= changed
