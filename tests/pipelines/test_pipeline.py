"""CCEditPipeline on the tiny random model: determinism, branch switches, guidance passes, decoding fallback."""

import logging

import numpy as np
import pytest
import torch

from ccedit.errors import InvalidInputError
from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.tiny import tiny_components
from ccedit.schedulers import build_scheduler

FRAMES, H, W = 4, 64, 128


@pytest.fixture(scope="module")
def components():
    return tiny_components(keyframe=True)


def make_pipe(components, **changes):
    parts = {**components, "scheduler": build_scheduler("euler"), **changes}
    return CCEditPipeline(**parts)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    video = (rng.rand(FRAMES, H, W, 3) * 255).astype(np.uint8)
    maps = torch.from_numpy(rng.rand(FRAMES, 3, H, W).astype(np.float32))
    keyframe = (rng.rand(H, W, 3) * 255).astype(np.uint8)
    return video, maps, keyframe


def run(pipe, data, seed=0, **kw):
    video, maps, _ = data
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("structure_maps", [maps])
    return pipe("a watercolor painting", video, generator=torch.Generator().manual_seed(seed), progress=False, **kw)


class CallCounter:
    """Counts forward calls of a module and the batch sizes it saw."""

    def __init__(self, module):
        self.batches = []
        self.handle = module.register_forward_pre_hook(lambda m, args, kwargs=None: self.batches.append(args[0].shape[0]))

    def close(self):
        self.handle.remove()


def test_same_seed_same_frames_and_another_seed_differs(components, data):
    pipe = make_pipe(components)
    a, b, c = run(pipe, data, 0), run(pipe, data, 0), run(pipe, data, 1)
    assert a.frames.shape == (1, FRAMES, H, W, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert set(a.timings) >= {"encode_prompt", "denoise", "decode", "total"}


def test_stage_times_wait_for_a_gpus_queued_work(monkeypatch):
    """A stage's time on a GPU counts its kernels, not only their launches: the clock synchronises the device it
    reads for (and only a CUDA device)."""
    from ccedit.pipelines.pipeline_calls import finished_time

    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    finished_time(torch.device("cpu"))
    assert synchronised == []
    finished_time(torch.device("cuda", 1))
    assert synchronised == [torch.device("cuda", 1)]


def test_keyframe_changes_the_output_and_no_keyframe_skips_the_appearance_branch(components, data):
    pipe = make_pipe(components)
    counter = CallCounter(pipe.appearance)
    plain = run(pipe, data)
    assert counter.batches == []
    scale0 = run(pipe, data, keyframe=data[2], appearance_scale=0.0)
    assert counter.batches == []
    assert np.array_equal(plain.frames, scale0.frames)
    keyed = run(pipe, data, keyframe=data[2], keyframe_index=0)
    assert counter.batches == [2]  # the keyframe at both Euler steps in one call, for both guidance halves
    counter.close()
    assert not np.array_equal(plain.frames, keyed.frames)


@pytest.mark.parametrize("index", [0, 2, FRAMES - 1])
def test_a_keyframe_at_appearance_scale_zero_equals_no_keyframe_at_any_index(components, data, index):
    pipe = make_pipe(components)
    plain = run(pipe, data, output_type="latent")
    scale0 = run(pipe, data, output_type="latent", keyframe=data[2], keyframe_index=index, appearance_scale=0.0)
    assert torch.equal(plain.frames, scale0.frames)


def test_a_keyframe_prior_needs_a_keyframe_that_acts(components, data):
    # at scale 0 a keyframe acts like none, and no keyframe has no prior to give
    pipe = make_pipe(components)
    with pytest.raises(InvalidInputError, match="needs a keyframe that acts"):
        run(pipe, data, keyframe=data[2], appearance_scale=0.0, prior="keyframe", prior_coefficient=0.5)


def test_two_keyframes_run_the_appearance_branch_once_per_step_and_differ_from_one(components, data):
    pipe = make_pipe(components)
    video, maps, keyframe = data
    counter = CallCounter(pipe.appearance)
    two = run(pipe, data, output_type="latent", keyframe=[keyframe, keyframe[::-1].copy()], keyframe_index=[0, -1])
    assert counter.batches == [4]  # both keyframes at both steps in one call
    counter.close()
    one = run(pipe, data, output_type="latent", keyframe=keyframe, keyframe_index=0)
    assert (two.frames - one.frames).abs().max() > 1e-4
    with pytest.raises(InvalidInputError, match="two keyframes show frame 3"):
        run(pipe, data, keyframe=[keyframe, keyframe], keyframe_index=[3, -1])
    with pytest.raises(InvalidInputError, match="2 keyframes need 2"):
        run(pipe, data, keyframe=[keyframe, keyframe])


def test_structure_scale_zero_equals_no_controlnet(components, data):
    with_net = make_pipe(components)
    without = make_pipe(components, controlnet=None)
    counter = CallCounter(with_net.controlnet)
    zero = run(with_net, data, structure_scale=0.0)
    assert counter.batches == []
    counter.close()
    none = run(without, data, structure_maps=[])
    assert np.array_equal(zero.frames, none.frames)
    assert not np.array_equal(run(with_net, data).frames, none.frames)


def test_guidance_scale_one_runs_one_pass_not_two(components, data):
    pipe = make_pipe(components)
    counter = CallCounter(pipe.unet.conv_in)
    run(pipe, data, guidance_scale=1.0)
    assert counter.batches == [FRAMES, FRAMES]  # 2 steps, batch of one video's frames
    counter.batches.clear()
    run(pipe, data, guidance_scale=7.5)
    assert counter.batches == [2 * FRAMES, 2 * FRAMES]  # [uncond; cond] in one batch
    counter.close()


def test_dpmpp_2s_ancestral_makes_two_calls_per_step_but_the_last(components, data):
    pipe = make_pipe(components, scheduler=build_scheduler("dpmpp_2s_ancestral"))
    counter = CallCounter(pipe.unet.conv_in)
    run(pipe, data, num_inference_steps=3)
    counter.close()
    assert len(counter.batches) == 2 * 3 - 1


def test_sdedit_strength_runs_the_tail_and_prior_changes_the_start(components, data):
    pipe = make_pipe(components)
    counter = CallCounter(pipe.unet.conv_in)
    run(pipe, data, num_inference_steps=4, strength=0.5)
    assert len(counter.batches) == 1  # int(0.5 * 5) - 1 kept steps
    counter.close()
    plain = run(pipe, data, output_type="latent")
    prior = run(pipe, data, output_type="latent", prior="video", prior_coefficient=0.5)
    assert plain.frames.shape == (1, 4, FRAMES, H // 8, W // 8)
    assert (prior.frames - plain.frames).abs().max() > 1e-3


def test_nan_in_a_low_precision_decode_is_decoded_again_in_float32(components, data, caplog, monkeypatch):
    pipe = make_pipe(components)
    latents = run(pipe, data, output_type="latent").frames
    pipe.vae.to(torch.bfloat16)
    real_decode = pipe.vae.decode

    def flaky_decode(z, *args, **kwargs):
        out = real_decode(z, *args, **kwargs)
        if z.dtype != torch.float32:
            out.sample[:] = float("nan")  # what an fp16 overflow looks like
        return out

    monkeypatch.setattr(pipe.vae, "decode", flaky_decode)
    with caplog.at_level(logging.WARNING):
        frames = pipe.decode_latents(latents)
    pipe.vae.to(torch.float32)
    assert torch.isfinite(frames).all()
    assert pipe.vae.dtype == torch.float32
    assert "decoding again in float32" in caplog.text


def test_invalid_inputs_name_the_argument(components, data):
    pipe = make_pipe(components)
    video, maps, keyframe = data
    with pytest.raises(InvalidInputError, match="keyframe index 4 is out of range"):
        run(pipe, data, keyframe=keyframe, keyframe_index=FRAMES)
    with pytest.raises(InvalidInputError, match="multiple of"):
        pipe("x", video[:, :, :100], [maps[..., :100]], progress=False)
    with pytest.raises(InvalidInputError, match="must be 128x64"):
        run(pipe, data, keyframe=keyframe[:32])
    with pytest.raises(InvalidInputError, match="1 ControlNet"):
        run(pipe, data, structure_maps=[maps, maps])
    no_app = make_pipe(components, appearance=None)
    with pytest.raises(InvalidInputError, match="no appearance branch"):
        run(no_app, data, keyframe=keyframe)


def test_save_pretrained_and_from_pretrained_round_trip(components, data, tmp_path):
    pipe = make_pipe(components, scheduler=build_scheduler("dpmpp_2s_ancestral"))
    pipe.save_pretrained(tmp_path)
    index = (tmp_path / "model_index.json").read_text()
    assert "CCEditTemporalAdapter" in index and "AppearanceEncoder" in index
    loaded = CCEditPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler).__name__ == "DPMPP2SAncestralScheduler"
    assert np.array_equal(run(pipe, data).frames, run(loaded, data).frames)


def test_the_sampling_convention_belongs_to_the_model_and_is_saved_with_it(components, data, tmp_path):
    pipe = make_pipe(components, sampling_convention="diffusers")
    starts = []
    run(pipe, data, callback_on_step_end=None, latents=None)
    pipe.save_pretrained(tmp_path)
    assert CCEditPipeline.from_pretrained(tmp_path).config.sampling_convention == "diffusers"
    for convention in ("ccedit", "diffusers"):
        p = make_pipe(components, sampling_convention=convention)
        p.scheduler.set_timesteps(2)
        original = p.scheduler.scale_model_input
        p.scheduler.scale_model_input = lambda x, t, _o=original: (starts.append(float(x.std())), _o(x, t))[1]
        run(p, data)
    # CCEdit starts from sqrt(1 + sigma_max^2) (14.65); diffusers' Euler from its init_noise_sigma
    assert abs(starts[0] - starts[1]) > 0.01 * starts[0]
    with pytest.raises(ValueError, match="sampling_convention"):
        make_pipe(components, sampling_convention="other")


def test_callback_on_step_end_has_diffusers_signature_and_can_replace_the_latents(components, data):
    pipe = make_pipe(components)
    seen = []

    def callback(p, step_index, timestep, callback_kwargs):
        seen.append((p, step_index, float(timestep), sorted(callback_kwargs)))
        if step_index == 1:  # the last of 2 Euler steps
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}
        return {}

    out = run(pipe, data, callback_on_step_end=callback, output_type="latent")
    assert [(s[0] is pipe, s[1], s[3]) for s in seen] == [(True, 0, ["latents"]), (True, 1, ["latents"])]
    assert seen[0][2] > seen[1][2]  # timesteps in the scheduler's (descending) order
    assert float(out.frames.abs().max()) == 0.0  # the returned latents replaced the loop's
    untouched = run(pipe, data, callback_on_step_end=lambda p, i, t, kw: None, output_type="latent")
    assert torch.equal(untouched.frames, run(pipe, data, output_type="latent").frames)
    with pytest.raises(InvalidInputError, match="prompt_embeds"):
        run(pipe, data, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["prompt_embeds"])
