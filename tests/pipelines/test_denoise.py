"""The denoising loop: replay of the original sampling runs without the network (ref §6), guidance and seeding."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ccedit.errors import UserError
from ccedit.pipelines.denoise import (
    denoise,
    guided_noise_prediction,
    prepare_initial_latents,
    sdedit_kept_steps,
    sdedit_start,
    sdedit_timesteps,
)
from ccedit.schedulers import build_scheduler, completes_step, evaluation_steps, set_sampling_timesteps
from tests.conftest import REFERENCE, require

# fixture key in tiny_config.json -> registered scheduler name
FIXTURES = {"tv2v_euler": "euler", "tvi2v_dpmpp2sa": "dpmpp_2s_ancestral", "tvi2v_prior": "dpmpp_2s_ancestral"}
SHAPE = (2, 4, 3, 4, 4)  # (batch, channels, frames, height, width)


@pytest.fixture(scope="module")
def fixture_meta() -> dict:
    with open(require(REFERENCE / "tiny_config.json")) as f:
        return json.load(f)["sampling_fixtures"]["files"]


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_replay_matches_the_original_sampler(fixture_meta, key):
    """Feed the stored raw network outputs back in call order; every step must land on the stored latent.

    The fixtures guide in D space and we guide in eps space, which is equal up to float32 rounding, amplified by the
    guidance scale. That puts the network inputs ~1e-5 off after the first call and the latents ~6e-5 off, inside
    the README's 5e-4 (ref §6.5); the scheduler arithmetic itself is exact.
    """
    meta = fixture_meta[key]
    data = load_file(require(REFERENCE / meta["file"]))
    scheduler = build_scheduler(FIXTURES[key])
    set_sampling_timesteps(scheduler, meta["steps"])
    assert len(scheduler.timesteps) == meta["n_evals"]

    prior = meta["prior"]
    latents = prepare_initial_latents(
        data["noise.init"],
        scheduler,
        # The reference latent without its frame axis, so the repeat over frames is exercised too.
        prior=data["prior.ref_latent"] if prior else None,
        prior_coefficient=prior["prior_coefficient_x"] if prior else 0.0,
        noise_coefficient=prior["prior_coefficient_noise"] if prior else 1.0,
    )
    torch.testing.assert_close(latents, data["x_T"], atol=5e-5, rtol=0)

    calls: list[float] = []

    def model_fn(latent_model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        j = len(calls)
        assert torch.all(data["eval.timesteps"][j] == timestep), f"call {j}: timestep {timestep}"
        error = (latent_model_input - data[f"eval.{j}.net_input"]).abs().max().item()
        calls.append(error)
        return data[f"eval.{j}.eps"].clone()

    # Map each evaluation to the sampler step it belongs to; Euler has one evaluation per step.
    solver_steps = evaluation_steps(scheduler)
    step_kwargs_fn = None
    if "noise.0" in data:

        def step_kwargs_fn(index: int) -> dict:
            return {"noise": data[f"noise.{solver_steps[index]}"]}

    step_errors: dict[int, float] = {}

    def callback(index: int, timestep: torch.Tensor, x: torch.Tensor) -> None:
        if completes_step(solver_steps, index):
            step_errors[solver_steps[index]] = (x - data[f"x.{solver_steps[index]}"]).abs().max().item()

    final = denoise(
        model_fn,
        scheduler,
        latents,
        guidance_scale=meta["cfg"],
        callback=callback,
        progress=False,
        step_kwargs_fn=step_kwargs_fn,
    )

    assert len(calls) == meta["n_evals"]
    assert calls[0] <= 1e-6
    assert max(calls) <= 1e-4
    assert sorted(step_errors) == list(range(meta["steps"]))
    assert max(step_errors.values()) <= 5e-4
    assert (final - data["final"]).abs().max().item() <= 5e-4


def _toy_model_fn(calls: list[tuple[int, torch.Tensor]]):
    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], t))
        return torch.tanh(x) * 0.5 + 0.01 * float(t) / 1000

    return model_fn


@pytest.mark.parametrize("name", ["dpmpp_2s_ancestral", "euler_ancestral", "euler", "ddim", "dpmpp_2m", "unipc"])
def test_every_scheduler_runs_and_a_seed_fixes_the_result(name):
    def run(seed: int) -> torch.Tensor:
        scheduler = build_scheduler(name)
        set_sampling_timesteps(scheduler, 3)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(SHAPE, generator=generator)
        latents = prepare_initial_latents(noise, scheduler)
        return denoise(_toy_model_fn([]), scheduler, latents, guidance_scale=5.0, generator=generator, progress=False)

    first, second = run(0), run(0)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.equal(first, run(1))


@pytest.mark.parametrize("name", ["dpmpp_2s_ancestral", "euler"])
def test_guidance_one_runs_a_single_pass(name):
    scheduler = build_scheduler(name)
    set_sampling_timesteps(scheduler, 3)
    calls: list[tuple[int, torch.Tensor]] = []
    latents = prepare_initial_latents(torch.randn(SHAPE), scheduler)
    denoise(_toy_model_fn(calls), scheduler, latents, guidance_scale=1.0, progress=False)
    assert [batch for batch, _ in calls] == [SHAPE[0]] * len(scheduler.timesteps)
    assert len(calls) == (5 if name == "dpmpp_2s_ancestral" else 3)

    set_sampling_timesteps(scheduler, 3)
    calls.clear()
    denoise(_toy_model_fn(calls), scheduler, latents, guidance_scale=7.5, progress=False)
    assert [batch for batch, _ in calls] == [2 * SHAPE[0]] * len(scheduler.timesteps)


def test_guidance_mixes_uncond_first():
    scheduler = build_scheduler("euler")
    set_sampling_timesteps(scheduler, 1)
    latents = torch.zeros(SHAPE)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Rows [0, B) are the unconditional half, [B, 2B) the conditional one.
        return torch.cat([torch.full(SHAPE, 1.0), torch.full(SHAPE, 3.0)])

    eps = guided_noise_prediction(model_fn, scheduler, latents, scheduler.timesteps[0], guidance_scale=2.0)
    assert torch.all(eps == 1.0 + 2.0 * (3.0 - 1.0))


def test_callback_and_step_kwargs_see_every_evaluation():
    scheduler = build_scheduler("dpmpp_2s_ancestral")
    set_sampling_timesteps(scheduler, 3)
    seen: list[int] = []
    asked: list[int] = []

    def step_kwargs_fn(index: int) -> dict:
        asked.append(index)
        return {"noise": torch.zeros(SHAPE)}

    denoise(
        _toy_model_fn([]),
        scheduler,
        torch.randn(SHAPE),
        guidance_scale=2.0,
        callback=lambda index, timestep, x: seen.append(index),
        step_kwargs_fn=step_kwargs_fn,
        progress=False,
    )
    assert seen == asked == list(range(5))


def test_prepare_initial_latents_mixes_the_prior_before_scaling():
    scheduler = build_scheduler("dpmpp_2s_ancestral")
    set_sampling_timesteps(scheduler, 4)
    noise, prior = torch.randn(SHAPE), torch.randn(SHAPE[:2] + SHAPE[3:])
    latents = prepare_initial_latents(noise, scheduler, prior=prior, prior_coefficient=0.5, noise_coefficient=2.0)
    expected = (0.5 * prior[:, :, None] + 2.0 * noise) * scheduler.init_noise_sigma
    torch.testing.assert_close(latents, expected)
    with pytest.raises(ValueError, match="prior"):
        prepare_initial_latents(noise, scheduler, prior_coefficient=0.1)
    with pytest.raises(ValueError, match="prior"):
        prepare_initial_latents(noise, scheduler, prior=prior[:, :2], prior_coefficient=0.1)
    ddim = build_scheduler("ddim")
    set_sampling_timesteps(ddim, 4)
    assert torch.equal(prepare_initial_latents(noise, ddim), noise)


@pytest.mark.parametrize("name", ["dpmpp_2s_ancestral", "euler"])
def test_sdedit_start_for_sigma_schedulers(name):
    scheduler = build_scheduler(name)
    set_sampling_timesteps(scheduler, 9)
    z, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    latents, timesteps = sdedit_start(z, noise, scheduler, strength=0.5)
    # int(0.5 * (9 + 1)) = 5 sigmas kept, the final 0 included: 4 steps, starting at step 5.
    begin = 5 * scheduler.order
    assert torch.equal(timesteps, scheduler.timesteps[begin:])
    torch.testing.assert_close(latents, z + scheduler.sigmas[begin] * noise)
    calls: list[tuple[int, torch.Tensor]] = []
    out = denoise(_toy_model_fn(calls), scheduler, latents, guidance_scale=2.0, timesteps=timesteps, progress=False)
    assert len(calls) == len(timesteps) and torch.isfinite(out).all()


def test_sdedit_start_for_other_schedulers_and_bad_strength():
    scheduler = build_scheduler("ddim")
    set_sampling_timesteps(scheduler, 9)
    z, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    latents, timesteps = sdedit_start(z, noise, scheduler, strength=0.5)
    assert len(timesteps) == 4
    torch.testing.assert_close(latents, scheduler.add_noise(z, noise, timesteps[:1]))

    latents, timesteps = sdedit_start(z, noise, scheduler, strength=0.05)
    assert len(timesteps) == 0 and torch.equal(latents, z)
    with pytest.raises(UserError, match="strength"):
        sdedit_start(z, noise, scheduler, strength=0.0)


@pytest.mark.parametrize("convention,kept,first", [("ccedit", 17, 566), ("diffusers", 18, 599)])
def test_sdedit_keeps_the_steps_of_the_models_sampling_convention(convention, kept, first):
    # diffusers' video-to-video pipelines keep min(int(n * strength), n) steps; CCEdit counts the final sigma 0 too
    scheduler = build_scheduler("ddim")
    set_sampling_timesteps(scheduler, 30, convention=convention)
    timesteps = sdedit_timesteps(scheduler, 0.6, convention)
    assert len(timesteps) == kept and int(timesteps[0]) == first
    assert sdedit_kept_steps(30, 0.6, convention) == kept
