"""Keyframes anywhere: kept latents, honoured keyframes, and the hierarchical (sparse, then dense) edit."""

import numpy as np
import pytest
import torch

from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.clip_denoiser import APPEARANCE_TIMESTEPS_PER_CALL
from ccedit.pipelines.denoise import KnownLatents, denoise, prepare_initial_latents
from ccedit.pipelines.tiny import tiny_components
from ccedit.pipelines.windows import sparse_anchors
from ccedit.schedulers import build_scheduler, set_sampling_timesteps

H, W, FRAMES = 64, 96, 10


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "ddim", "dpmpp_2m", "dpmpp_2s_ancestral"])
def test_known_latents_are_the_denoised_estimate_at_every_step(name):
    scheduler = build_scheduler(name)
    set_sampling_timesteps(scheduler, 4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 5, 6, 6, generator=g)
    clean = torch.randn(1, 4, 2, 6, 6, generator=g)
    known = KnownLatents((1, 3), clean)

    def model_fn(x, t):  # any network: its prediction of the known frames is replaced
        return torch.tanh(x) * 0.5

    seen = []
    latents = denoise(model_fn, scheduler, prepare_initial_latents(noise, scheduler), guidance_scale=1.0,
                      generator=g, progress=False, known=known, callback=lambda i, t, x: seen.append(x))
    # before the final pin, the last step already landed on the known latents: the estimate held them throughout.
    # (DDIM's last step, with SD's set_alpha_to_one=False, stops at alphas_cumprod[0] < 1, a little short of x0.)
    tolerance = 0.2 if name == "ddim" else 2e-3
    torch.testing.assert_close(seen[-1][:, :, [1, 3]], clean, atol=tolerance, rtol=1e-3)
    assert torch.equal(latents[:, :, [1, 3]], clean)
    set_sampling_timesteps(scheduler, 4)
    free = denoise(model_fn, scheduler, prepare_initial_latents(noise, scheduler), guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(1), progress=False)
    assert (free[:, :, [1, 3]] - clean).abs().max() > 0.1


def test_sparse_anchors_include_the_keyframes_and_ends_and_are_close_enough():
    anchors = sparse_anchors(300, 16, 4, [0, 150, 151])
    assert {0, 150, 151, 299} <= set(anchors) and anchors == sorted(set(anchors))
    assert max(b - a for a, b in zip(anchors, anchors[1:])) <= 12
    assert sparse_anchors(10, 16, 4, [3]) == [0, 3, 9]


@pytest.fixture(scope="module")
def pipe():
    return CCEditPipeline(**{**tiny_components(keyframe=True), "scheduler": build_scheduler("dpmpp_2s_ancestral")})


@pytest.fixture(scope="module")
def clip():
    rng = np.random.RandomState(0)
    video = (rng.rand(FRAMES, H, W, 3) * 255).astype(np.uint8)
    maps = torch.from_numpy((rng.rand(FRAMES, 3, H, W) > 0.8).astype(np.float32))
    keyframes = [(rng.rand(H, W, 3) * 255).astype(np.uint8) for _ in range(2)]
    return video, maps, keyframes


def edit(pipe, clip, **kw):
    video, maps, _ = clip
    kw.setdefault("num_inference_steps", 2)
    return pipe("a watercolor painting", video, [maps], generator=torch.Generator().manual_seed(0), progress=False,
                output_type="latent", **kw).frames


def keyframe_latents(pipe, images):
    with torch.no_grad():
        return pipe.encode_images(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255 * 2 - 1)


@pytest.mark.parametrize("window", [None, 4])
def test_two_keyframes_are_each_honoured_in_one_window_and_hierarchically(pipe, clip, window):
    _, _, keyframes = clip
    out = edit(pipe, clip, keyframe=keyframes, keyframe_index=[0, 7], window_length=window, window_overlap=1)
    expected = keyframe_latents(pipe, keyframes)
    torch.testing.assert_close(out[0, :, [0, 7]].transpose(0, 1), expected)
    repainted = edit(pipe, clip, keyframe=keyframes, keyframe_index=[0, 7], window_length=window, window_overlap=1,
                     pin_keyframes=False)
    assert (repainted[0, :, [0, 7]].transpose(0, 1) - expected).abs().max() > 0.1


def test_a_long_clip_with_a_keyframe_runs_a_sparse_pass_then_dense_windows(pipe, clip):
    _, _, keyframes = clip
    calls = []
    handle = pipe.appearance.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    hierarchical = edit(pipe, clip, keyframe=keyframes[0], keyframe_index=5, window_length=4, window_overlap=1)
    handle.remove()
    anchors = sparse_anchors(FRAMES, 4, 1, [5])
    distinct = len(set(pipe.scheduler.timesteps.tolist()))
    # first pass: the user's keyframe alone; second: every anchor, edited by the first pass; each keyframe once per
    # timestep, several timesteps per call
    per_pass = -(-distinct // APPEARANCE_TIMESTEPS_PER_CALL)
    assert distinct > 1 and len(calls) == 2 * per_pass
    assert sum(calls[:per_pass]) == distinct and sum(calls[per_pass:]) == len(anchors) * distinct
    flat = edit(pipe, clip, keyframe=keyframes[0], keyframe_index=5, window_length=4, window_overlap=1,
                hierarchical=False)
    assert (hierarchical - flat).abs().max() > 1e-3
    torch.testing.assert_close(hierarchical[0, :, 5], keyframe_latents(pipe, keyframes[:1])[0])
    # without a keyframe nothing is hierarchical, and the window is the clip: one pass
    assert torch.equal(edit(pipe, clip, window_length=FRAMES, hierarchical=True), edit(pipe, clip))


def test_several_prompts_keep_their_own_edited_anchors(pipe, clip):
    video, maps, keyframes = clip
    both = pipe(["a watercolor painting", "a robot"], video, [maps], keyframe=keyframes[0], keyframe_index=5,
                window_length=4, window_overlap=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                progress=False, output_type="latent").frames
    assert both.shape[0] == 2 and (both[0] - both[1]).abs().max() > 1e-3
    torch.testing.assert_close(both[:, :, 5], keyframe_latents(pipe, keyframes[:1]).expand(2, -1, -1, -1))


def test_per_sample_keyframes_equal_shared_ones_when_the_samples_agree(pipe):
    # the dense pass's keyframes are per sample; with equal rows they must act exactly like shared ones
    from ccedit.pipelines.clip_denoiser import ClipDenoiser
    from ccedit.pipelines.conditions import Keyframes, TridentConditions

    g = torch.Generator().manual_seed(2)
    x, text = torch.randn(2, 4, 5, 8, 12, generator=g), torch.randn(2, 77, 32, generator=g)
    latents = torch.randn(2, 4, 8, 12, generator=g)
    trident = pipe.trident()
    outputs = []
    for keyframes in (Keyframes((1, 3), latents), Keyframes((1, 3), latents[None].expand(2, -1, -1, -1, -1))):
        conditions = TridentConditions(text, [], (), keyframes, 1.0)
        with torch.no_grad():
            outputs.append(ClipDenoiser(trident, conditions, 5, device=torch.device("cpu"), dtype=torch.float32)(x, torch.tensor(400)))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
