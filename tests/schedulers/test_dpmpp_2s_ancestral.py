"""DPMPP2SAncestralScheduler: schedule, state handling and the update of ref §6.4."""

from __future__ import annotations

import json

import pytest
import torch

from ccedit.schedulers import DPMPP2SAncestralScheduler, original_timesteps
from tests.conftest import REFERENCE, assert_within_ulps, require


@pytest.fixture(scope="module")
def reference() -> dict:
    with open(require(REFERENCE / "sampling_reference.json")) as f:
        return json.load(f)


def test_four_step_schedule_interleaves_midpoints():
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.dtype == torch.int64
    assert scheduler.timesteps.tolist() == [999, 749, 749, 499, 499, 249, 249]
    assert scheduler.solver_steps.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert scheduler.sigmas.shape == (8,) and scheduler.sigmas[-1] == 0
    assert_within_ulps(scheduler.init_noise_sigma, 14.64881420135498)
    assert scheduler.order == 2 and len(scheduler) == 1000


@pytest.mark.parametrize("num_steps", ["20", "30", "50"])
def test_schedule_matches_reference(reference, num_steps):
    schedule = reference["sampler_schedules"][num_steps]
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(int(num_steps))
    steps = schedule["steps"]
    expected_timesteps, expected_sigmas = [], []
    for step in steps:
        expected_timesteps.append(step["timestep_idx"])
        expected_sigmas.append(step["sigma"])
        if "dpmpp2s_midpoint" in step:
            expected_timesteps.append(step["dpmpp2s_midpoint"]["timestep_idx"])
            expected_sigmas.append(step["dpmpp2s_midpoint"]["sigma"])
    assert scheduler.timesteps.tolist() == expected_timesteps
    assert len(expected_timesteps) == 2 * int(num_steps) - 1
    assert_within_ulps(scheduler.sigmas[:-1], expected_sigmas, ulps=4)  # midpoints: exp of logs, errors compound
    assert torch.equal(scheduler.sigmas[:-1:2], torch.tensor(expected_sigmas[::2]))  # grid sigmas: table entries
    assert_within_ulps(scheduler.sigma_down, [s["ancestral_eta1"]["sigma_down"] for s in steps], ulps=4)
    assert_within_ulps(scheduler.sigma_up, [s["ancestral_eta1"]["sigma_up"] for s in steps], ulps=4)
    assert_within_ulps(scheduler.init_noise_sigma, schedule["init_noise_scale_sqrt_1_plus_sigma0_sq"])


def test_scale_model_input_uses_the_quantised_sigma():
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(4)
    sample = torch.ones(2, 4, 3, 2, 2)
    first = scheduler.scale_model_input(sample, scheduler.timesteps[0])
    assert_within_ulps(first[0, 0, 0, 0, 0], 0.0682649090886116)
    scheduler.step(torch.zeros_like(sample), scheduler.timesteps[0], sample, noise=torch.zeros_like(sample))
    # The midpoint sigma (4.0817304) quantises to the grid sigma of 749 (4.0817294), and c_in uses the latter.
    assert scheduler.sigmas[1] != scheduler.sigmas[2]
    mid = scheduler.scale_model_input(sample, scheduler.timesteps[1])
    assert_within_ulps(mid[0, 0, 0, 0, 0], 0.2379569262266159, ulps=2)


def test_clean_prediction_is_a_fixed_point():
    """With eps = 0, D = x at every sigma; without noise (eta = 0) every update must then return x itself."""
    scheduler = DPMPP2SAncestralScheduler(eta=0.0)
    scheduler.set_timesteps(3)
    x = torch.full((1, 4, 2, 2, 2), 10.0)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    assert torch.allclose(x, torch.full_like(x, 10.0), atol=1e-5)


def test_last_noise_draw_is_discarded_but_made():
    def run(last_noise: torch.Tensor, generator_seed: int | None = None) -> torch.Tensor:
        scheduler = DPMPP2SAncestralScheduler()
        scheduler.set_timesteps(2)
        x = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
        eps = torch.full_like(x, 0.1)
        for i, t in enumerate(scheduler.timesteps):
            is_last = i == len(scheduler.timesteps) - 1
            noise = last_noise if is_last else torch.ones_like(x)
            x = scheduler.step(eps, t, x, noise=noise).prev_sample
        return x

    assert torch.equal(run(torch.zeros(1, 4, 2, 2, 2)), run(torch.full((1, 4, 2, 2, 2), 5.0)))

    # With a generator, every step draws once: after 2 steps the generator has advanced by exactly two draws.
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(2)
    generator = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 4, 2, 2, 2)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x, generator=generator).prev_sample
    reference_generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        torch.randn(x.shape, generator=reference_generator)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=reference_generator))


def test_noise_with_wrong_shape_is_rejected():
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(1)
    x = torch.zeros(1, 4, 2, 2, 2)
    with pytest.raises(ValueError, match="noise"):
        scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x, noise=torch.zeros(1, 4, 2, 2))


def test_begin_index_and_mid_schedule_start():
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="first evaluation"):
        scheduler.set_begin_index(1)
    # Without a begin index, starting at 749 means the step that starts there, not the midpoint of step 0.
    scheduler.scale_model_input(torch.zeros(1), torch.tensor(749))
    assert scheduler.step_index == 2 and scheduler.state_in_first_order
    scheduler.set_timesteps(4)
    scheduler.set_begin_index(4)
    scheduler.scale_model_input(torch.zeros(1), torch.tensor(499))
    assert scheduler.step_index == 4


def test_step_before_set_timesteps_and_past_the_end_fail():
    scheduler = DPMPP2SAncestralScheduler()
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(x, 999, x)
    scheduler.set_timesteps(1)
    scheduler.step(x, 999, x)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(x, 999, x)


def test_add_noise_uses_grid_sigma():
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(4)
    z, noise = torch.zeros(2, 4, 1, 2, 2), torch.ones(2, 4, 1, 2, 2)
    noised = scheduler.add_noise(z, noise, torch.tensor([499]))
    assert torch.all(noised == scheduler.sigmas[4])
    assert scheduler.timesteps[4] == 499


def test_config_round_trip(tmp_path):
    scheduler = DPMPP2SAncestralScheduler(eta=0.5, s_noise=0.9)
    scheduler.save_config(tmp_path)
    loaded = DPMPP2SAncestralScheduler.from_pretrained(tmp_path)
    assert loaded.config.eta == 0.5 and loaded.config.s_noise == 0.9
    loaded.set_timesteps(30)
    assert loaded.timesteps[0::2].tolist() == original_timesteps(30).tolist()


@pytest.mark.parametrize("option", [{"beta_schedule": "linear"}, {"prediction_type": "v_prediction"}, {"eta": -1.0}])
def test_unsupported_options_fail(option):
    with pytest.raises(ValueError):
        DPMPP2SAncestralScheduler(**option)
