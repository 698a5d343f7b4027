"""One denoised-sample contract for every parameterisation (`schedulers/prediction.py`): sigma-space noise,
variance-preserving noise and velocity, and flow matching, through keyframe pinning, region edits and SDEdit."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from ccedit.pipelines.denoise import KnownLatents, denoise, prepare_initial_latents, sdedit_start
from ccedit.pipelines.region import SourceRegion
from ccedit.schedulers import (
    build_scheduler,
    initial_noise_scale,
    parameterisation,
    set_sampling_timesteps,
    uses_original_timesteps,
)
from ccedit.schedulers.prediction import (
    FlowMatching,
    SigmaSpaceEpsilon,
    VariancePreservingEpsilon,
    VariancePreservingVelocity,
)

SHAPE = (1, 4, 5, 6, 6)  # (batch, channels, frames, height, width)
KNOWN_FRAMES = (1, 3)
STEPS = 4

# DDIM ends at alphas_cumprod[0] under SD's set_alpha_to_one=False, a little short of the estimate; with True its last
# step lands on the estimate itself, as every other scheduler here does, so one tolerance (float rounding) serves all.
SCHEDULERS = {
    "euler": (lambda: build_scheduler("euler"), SigmaSpaceEpsilon),
    "ddim": (lambda: build_scheduler("ddim", set_alpha_to_one=True), VariancePreservingEpsilon),
    "ddim_v": (lambda: build_scheduler("ddim", set_alpha_to_one=True, prediction_type="v_prediction"),
               VariancePreservingVelocity),
    "flow_euler": (lambda: FlowMatchEulerDiscreteScheduler(shift=3.0), FlowMatching),
    "unipc_flow": (lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                   flow_shift=3.0), FlowMatching),
}


def ready(name: str):
    scheduler = SCHEDULERS[name][0]()
    set_sampling_timesteps(scheduler, STEPS)
    return scheduler


def linear_model(seed: int = 0):
    """A network stand-in: a fixed random linear map of each sample, mixing frames as temporal layers do."""
    size = math.prod(SHAPE[1:])
    weight = torch.randn(size, size, generator=torch.Generator().manual_seed(seed)) * (0.5 / size**0.5)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ weight.T).reshape(x.shape)

    return model_fn


def draws(count: int, seed: int = 0, shape=SHAPE) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float32 rounding, relative to the latents' size (Euler's start is ~15 times the noise)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_scheduler_gets_its_parameterisation_and_the_prediction_for_clean_denoises_to_it(name):
    scheduler = ready(name)
    adapter = parameterisation(scheduler)
    assert type(adapter) is SCHEDULERS[name][1]
    sample, clean = draws(2)
    for index, timestep in enumerate(scheduler.timesteps):
        prediction = adapter.prediction_for_clean(scheduler, sample, clean, timestep, index)
        close(adapter.denoised(scheduler, sample, prediction, timestep, index), clean)


@pytest.mark.parametrize("name", ["euler", "ddim", "ddim_v"])
def test_denoised_is_the_schedulers_own_estimate(name):
    # the formulas of `denoised`, checked against the estimate the scheduler reports, for any prediction
    scheduler = ready(name)
    adapter = parameterisation(scheduler)
    sample, prediction = draws(2, seed=1)
    for index, timestep in enumerate(scheduler.timesteps):
        scheduler.scale_model_input(sample, timestep)
        own = scheduler.step(prediction, timestep, sample).pred_original_sample
        close(adapter.denoised(scheduler, sample, prediction, timestep, index), own)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_a_step_from_the_forward_process_towards_the_clean_sample_lands_on_the_forward_process(name):
    # with the prediction for the clean sample everywhere, every step goes from `noised` at one evaluation to
    # `noised` at the next: `noised` and `prediction_for_clean` describe the same process as the scheduler's step
    scheduler = ready(name)
    adapter = parameterisation(scheduler)
    clean, noise = draws(2, seed=2)
    timesteps = scheduler.timesteps
    start = adapter.noised(scheduler, clean, noise, timesteps[0], 0)
    seen = []
    denoise(linear_model(), scheduler, start, guidance_scale=1.0, progress=False,
            known=KnownLatents(tuple(range(SHAPE[2])), clean), callback=lambda i, t, x: seen.append(x))
    for index in range(1, len(timesteps)):
        close(seen[index - 1], adapter.noised(scheduler, clean, noise, timesteps[index], index))
    close(seen[-1], clean)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_known_latents_are_kept_and_the_other_frames_are_denoised_around_them(name):
    noise, known_latents = draws(1, seed=3)[0], draws(1, seed=4, shape=(1, 4, len(KNOWN_FRAMES), 6, 6))[0]
    others = [f for f in range(SHAPE[2]) if f not in KNOWN_FRAMES]

    def run(known: KnownLatents | None, seen: list) -> torch.Tensor:
        scheduler = ready(name)
        return denoise(linear_model(), scheduler, prepare_initial_latents(noise, scheduler), guidance_scale=2.0,
                       progress=False, known=known, callback=lambda i, t, x: seen.append(x))

    seen: list[torch.Tensor] = []
    kept = run(KnownLatents(KNOWN_FRAMES, known_latents), seen)
    # the last step itself lands on the known latents (the final pin only removes rounding)
    close(seen[-1][:, :, list(KNOWN_FRAMES)], known_latents)
    assert torch.equal(kept[:, :, list(KNOWN_FRAMES)], known_latents)
    free = run(None, [])
    assert (kept[:, :, others] - free[:, :, others]).abs().max() > 1e-2
    assert (free[:, :, list(KNOWN_FRAMES)] - known_latents).abs().max() > 0.1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_a_region_edit_keeps_the_source_outside_the_mask(name):
    source, noise = draws(2, seed=5)
    mask = torch.rand(SHAPE[2:], generator=torch.Generator().manual_seed(6)) > 0.5
    scheduler = ready(name)
    seen: list[torch.Tensor] = []
    edited = denoise(linear_model(), scheduler, prepare_initial_latents(noise, scheduler), guidance_scale=2.0,
                     progress=False, region=SourceRegion(mask, source, noise),
                     callback=lambda i, t, x: seen.append(x))
    outside = ~mask[None, None].expand(SHAPE)
    close(seen[-1][outside], source[outside])  # the last step lands on the source there
    assert torch.equal(edited[outside], source[outside])
    assert (edited[~outside] - source[~outside]).abs().max() > 0.1


@pytest.mark.parametrize("name", ["flow_euler", "unipc_flow"])
def test_flow_schedulers_start_from_the_noise_and_keep_their_own_timesteps(name):
    scheduler = ready(name)
    assert initial_noise_scale(scheduler) == 1.0
    (noise,) = draws(1)
    assert torch.equal(prepare_initial_latents(noise, scheduler), noise)
    # FlowMatchEuler would shift the sigmas derived from the original's timesteps but not the timesteps themselves
    assert not uses_original_timesteps(scheduler)
    reference = SCHEDULERS[name][0]()
    reference.set_timesteps(STEPS)
    assert torch.equal(scheduler.timesteps, reference.timesteps)


def test_sdedit_with_flow_matching_starts_from_scale_noise_at_the_first_kept_step():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    set_sampling_timesteps(scheduler, 8, convention="diffusers")
    z, noise = draws(2, seed=7)
    latents, timesteps = sdedit_start(z, noise, scheduler, strength=0.5, convention="diffusers")
    assert torch.equal(timesteps, scheduler.timesteps[4:])
    assert torch.equal(latents, scheduler.scale_noise(z, timesteps[:1], noise))
    assert 0.0 < float(scheduler.sigmas[4]) < 1.0 and not torch.equal(latents, z)
    out = denoise(linear_model(), scheduler, latents, guidance_scale=2.0, timesteps=timesteps, progress=False,
                  known=KnownLatents(KNOWN_FRAMES, z[:, :, list(KNOWN_FRAMES)]))
    assert torch.isfinite(out).all()

    unipc = SCHEDULERS["unipc_flow"][0]()
    set_sampling_timesteps(unipc, 8, convention="diffusers")
    latents, timesteps = sdedit_start(z, noise, unipc, strength=0.5, convention="diffusers")
    close(latents, unipc.add_noise(z, noise, timesteps[:1]))


@pytest.mark.parametrize("make, fault", [
    (lambda: build_scheduler("euler", prediction_type="v_prediction"), "sigma-space"),
    (lambda: build_scheduler("unipc", prediction_type="flow_prediction"), "flow-matching"),
    (lambda: build_scheduler("ddim", prediction_type="sample"), "not supported"),
])
def test_an_unknown_combination_is_refused_in_one_line(make, fault):
    scheduler = make()
    set_sampling_timesteps(scheduler, STEPS)
    with pytest.raises(ValueError, match=fault) as error:
        parameterisation(scheduler)
    assert "\n" not in str(error.value)
