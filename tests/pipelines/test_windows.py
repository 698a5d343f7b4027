"""Windowed denoising: the planner's coverage and keyframe placement, the fusion, and the pipeline around them."""

import itertools

import numpy as np
import pytest
import torch

from ccedit.errors import InvalidInputError
from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.clip_denoiser import ClipDenoiser
from ccedit.pipelines.conditions import Keyframes, TridentConditions
from ccedit.pipelines.tiny import tiny_components
from ccedit.pipelines.windows import fusion_weights, plan_passes, plan_windows, reflect
from ccedit.schedulers import build_scheduler

H, W = 64, 96

CASES = [
    (num_frames, length, overlap, keyframes)
    for num_frames, length, overlap in [(1, 16, 4), (7, 16, 4), (16, 16, 4), (17, 16, 0), (34, 16, 4), (300, 16, 4),
                                        (45, 17, 8), (40, 5, 4)]
    for keyframes in [(), (0,), (num_frames - 1,), (num_frames // 2,), tuple(sorted({1 % num_frames, num_frames - 2 if num_frames > 2 else 0}))]
]


def frame_totals(windows, weights, num_frames):
    total = torch.zeros(num_frames, dtype=torch.float64)
    counts = torch.zeros(num_frames)
    for window, weight in zip(windows, weights):
        total.index_add_(0, torch.tensor(window.frames), weight.double())
        counts.index_add_(0, torch.tensor(window.frames), torch.ones(len(window)))
    return total, counts


@pytest.mark.parametrize("num_frames,length,overlap,keyframes", CASES)
def test_every_frame_is_covered_and_its_weights_sum_to_one(num_frames, length, overlap, keyframes):
    windows = plan_windows(num_frames, length, overlap, keyframes)
    total, counts = frame_totals(windows, fusion_weights(windows, num_frames), num_frames)
    assert (counts >= 1).all()
    torch.testing.assert_close(total, torch.ones(num_frames, dtype=torch.float64), atol=1e-6, rtol=0)
    window = min(length, num_frames)
    assert all(len(w) == window and all(0 <= f < num_frames for f in w.frames) for w in windows)
    # each keyframe sits at the centre of a window of its own
    for k in keyframes:
        own = [w for w in windows if w.keyframe == k]
        assert len(own) == 1 and own[0].frames[own[0].centre] == k


@pytest.mark.parametrize("num_frames,length,overlap", [(34, 16, 4), (300, 16, 4), (45, 17, 8), (100, 9, 2)])
def test_neighbouring_plain_windows_share_at_least_the_overlap(num_frames, length, overlap):
    windows = plan_windows(num_frames, length, overlap)
    starts = [w.frames[0] for w in windows]
    assert starts[0] == 0 and windows[-1].frames[-1] == num_frames - 1
    assert all(b - a <= length - overlap for a, b in itertools.pairwise(starts))
    # a quarter-window overlap by default
    assert plan_windows(num_frames, length) == plan_windows(num_frames, length, length // 4)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_a_branch_that_takes_keyframes_anywhere_gets_plain_windows_holding_them_where_they_are(hierarchical):
    passes = plan_passes(40, 16, 4, [0, 21], hierarchical, centre_keyframes=False)
    assert len(passes) == (2 if hierarchical else 1)
    for frames, windows in passes:
        assert windows == plan_windows(len(frames), 16, 4)  # no window of its own, nothing mirrored
    # CCEdit's encoder gets each keyframe centred in a window of its own
    assert any(w.keyframe == 0 for w in plan_passes(40, 16, 4, [0, 21], False)[0][1])


def test_keyframes_at_the_edges_sit_at_the_centre_of_a_reflect_padded_window():
    first, last = (plan_windows(40, 17, 4, [k])[0] for k in (0, 39))
    assert first.frames == (8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8)
    assert last.frames[8] == 39 and last.frames[:9] == tuple(range(31, 40)) and last.frames[9] == 38
    assert [reflect(i, 5) for i in range(-4, 9)] == [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]


def test_bad_windows_are_refused():
    with pytest.raises(InvalidInputError, match="overlap \\(16\\) must be smaller than the window \\(16\\)"):
        plan_windows(40, 16, 16)
    with pytest.raises(InvalidInputError, match="at least 1 frame"):
        plan_windows(40, 0)
    assert len(plan_windows(10, 64, 4)) == 1  # a window longer than the clip is the whole clip


@pytest.fixture(scope="module")
def components():
    return tiny_components(keyframe=True)


@pytest.fixture(scope="module")
def clip():
    rng = np.random.RandomState(0)
    video = (rng.rand(10, H, W, 3) * 255).astype(np.uint8)
    maps = torch.from_numpy((rng.rand(10, 3, H, W) > 0.8).astype(np.float32))
    keyframe = (rng.rand(H, W, 3) * 255).astype(np.uint8)
    return video, maps, keyframe


def run(pipe, clip, frames=10, **kw):
    video, maps, _ = clip
    kw.setdefault("num_inference_steps", 2)
    return pipe("a watercolor painting", video[:frames], [maps[:frames]], generator=torch.Generator().manual_seed(0),
                progress=False, output_type="latent", **kw).frames


def test_one_window_over_the_clip_is_exactly_the_plain_network_call(components):
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")})
    trident = pipe.trident()
    g = torch.Generator().manual_seed(3)
    x, text = torch.randn(2, 4, 7, 8, 12, generator=g), torch.randn(2, 77, 32, generator=g)
    maps, key = torch.rand(7, 3, 64, 96, generator=g), torch.randn(1, 4, 8, 12, generator=g)
    t = torch.tensor(500)
    conditions = TridentConditions(text, [maps], (0.7,), Keyframes((3,), key), 0.9)
    with torch.no_grad():
        windowed = ClipDenoiser(trident, conditions, 7, plan_windows(7, 7, 2, [3]), device=torch.device("cpu"),
                                dtype=torch.float32)(x, t)
        plain = trident(x, t.expand(2), text, structure_maps=[maps.transpose(0, 1)[None].expand(2, -1, -1, -1, -1)],
                        structure_scale=[0.7], keyframe_latent=key.expand(2, -1, -1, -1), keyframe_index=3,
                        appearance_scale=0.9)
    # equal up to float rounding: the shared residuals come from a batch of one keyframe instead of one per sample
    torch.testing.assert_close(windowed, plain, atol=1e-5, rtol=1e-5)


def test_window_as_long_as_the_clip_equals_no_window(components, clip):
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")})
    whole = run(pipe, clip)
    assert torch.equal(run(pipe, clip, window_length=10), whole)
    assert torch.equal(run(pipe, clip, window_length=64, window_overlap=8), whole)
    windowed = run(pipe, clip, window_length=4, window_overlap=1)
    assert (windowed - whole).abs().max() > 1e-4  # the temporal layers see other neighbours


def test_fused_windows_equal_the_whole_clip_for_a_per_frame_network(components, clip):
    # With identity temporal layers and no keyframe, the network treats frames independently: any windows, fused
    # with weights that sum to one, must then reproduce the single-window prediction.
    temporal = tiny_components(keyframe=True)["temporal"].zero_init()
    pipe = CCEditPipeline(**{**components, "temporal": temporal, "scheduler": build_scheduler("euler")})
    whole = run(pipe, clip)
    for length, overlap in [(4, 1), (3, 0), (6, 5)]:
        windowed = run(pipe, clip, window_length=length, window_overlap=overlap)
        # rounding only: a frame fused from the wrong window, or weights not summing to one, moves it by far more
        assert (windowed - whole).norm() / whole.norm() < 1e-5


def test_structure_maps_in_reverse_frame_order_change_the_output_clearly(components, clip):
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")})
    video, maps, _ = clip
    forward = run(pipe, clip)
    reversed_maps = pipe("a watercolor painting", video, [maps.flip(0)], num_inference_steps=2,
                         generator=torch.Generator().manual_seed(0), progress=False, output_type="latent").frames
    moved = (reversed_maps - forward).transpose(1, 2).flatten(2).norm(dim=-1) / forward.transpose(1, 2).flatten(2).norm(dim=-1)
    assert (moved > 5e-3).all()  # every frame moves clearly (1e-5 under diffusers' default hint encoder)


def test_the_appearance_branch_runs_once_per_evaluation_whatever_the_windows(components, clip):
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("dpmpp_2s_ancestral")})
    calls = []
    handle = pipe.appearance.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    keyframes = [clip[2], clip[2][::-1].copy()]
    run(pipe, clip, window_length=4, window_overlap=1, keyframe=keyframes, keyframe_index=[0, 9], num_inference_steps=3,
        hierarchical=False)
    handle.remove()
    # DPM++(2S) ancestral evaluates twice per step but the last; a midpoint that falls on the next step's table
    # timestep (999, 666, 666, 333, 333 for 3 steps) needs no new residuals.
    timesteps = pipe.scheduler.timesteps.tolist()
    distinct = 1 + sum(a != b for a, b in itertools.pairwise(timesteps))
    assert len(timesteps) == 5 and distinct == 3
    # both keyframes at every distinct timestep of the next four in one call, shared by all windows and both
    # guidance halves
    assert calls == [2 * distinct]


def test_structure_hints_encoded_once_give_the_same_residuals(components):
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")})
    trident = pipe.trident()
    g = torch.Generator().manual_seed(5)
    x, text = torch.randn(2, 4, 5, 8, 12, generator=g), torch.randn(2, 77, 32, generator=g)
    maps = torch.rand(1, 3, 5, 64, 96, generator=g).expand(2, -1, -1, -1, -1)
    with torch.no_grad():
        direct = trident(x, torch.tensor(300), text, structure_maps=[maps])
        hints = trident.encode_structure([maps[:1]])
        encoded = trident(x, torch.tensor(300), text, structure_hints=[h.expand(2, -1, -1, -1, -1) for h in hints])
    torch.testing.assert_close(encoded, direct, atol=1e-5, rtol=1e-5)
    assert pipe.controlnet.controlnet_cond_embedding is not None  # the encoder is back in place after the call


@pytest.mark.parametrize("budget,expected", [(None, "once per clip"), (0, "once per window call")])
def test_the_hint_encoder_runs_once_per_clip_or_once_per_window_call(components, clip, budget, expected, monkeypatch):
    import ccedit.pipelines.clip_denoiser as clip_denoiser

    if budget is not None:
        monkeypatch.setattr(clip_denoiser, "HINT_CACHE_BYTES", budget)
    pipe = CCEditPipeline(**{**components, "scheduler": build_scheduler("euler")})
    frames = []
    handle = pipe.controlnet.controlnet_cond_embedding.register_forward_pre_hook(lambda m, a: frames.append(a[0].shape[0]))
    run(pipe, clip, window_length=4, window_overlap=1, num_inference_steps=3)  # 10 frames: 3 windows x 3 steps
    handle.remove()
    if expected == "once per clip":
        assert sum(frames) == 10  # every frame encoded once, whatever the steps, windows and guidance halves
    else:
        assert frames == [4] * 9  # each window's frames, once for both guidance halves
