"""The scheduler registry, the original timesteps and the initial noise scale (ref §5 item 16, §6.6)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from ccedit.errors import UserError
from ccedit.schedulers import (
    SCHEDULERS,
    DPMPP2SAncestralScheduler,
    build_scheduler,
    completes_step,
    evaluation_steps,
    initial_noise_scale,
    is_sigma_space,
    original_timesteps,
    set_sampling_timesteps,
    uses_original_timesteps,
)
from tests.conftest import assert_within_ulps

SIGMA_SPACE = {"euler", "euler_ancestral", "dpmpp_2s_ancestral"}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_gets_sd15_settings(name):
    scheduler = build_scheduler(name)
    assert isinstance(scheduler, SCHEDULERS[name])
    config = scheduler.config
    assert config.num_train_timesteps == 1000
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert config.prediction_type == "epsilon"
    set_sampling_timesteps(scheduler, 4)
    assert int(scheduler.timesteps[0]) == 999
    assert is_sigma_space(scheduler) == (name in SIGMA_SPACE)


def test_euler_settings_match_the_original_sampler():
    config = build_scheduler("euler").config
    expected = {
        "timestep_spacing": "trailing",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "final_sigmas_type": "zero",
        "timestep_type": "discrete",
        "rescale_betas_zero_snr": False,
    }
    assert {key: config[key] for key in expected} == expected


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError) as error:
        build_scheduler("heun")
    message = str(error.value)
    assert "'heun'" in message and all(name in message for name in SCHEDULERS)


def test_overrides_and_unknown_options():
    assert build_scheduler("dpmpp_2s_ancestral", eta=0.0).config.eta == 0.0
    with pytest.raises(UserError, match="no option colour"):
        build_scheduler("euler", colour="blue")


def test_original_timesteps_where_the_scheduler_takes_them():
    euler = build_scheduler("euler")
    assert uses_original_timesteps(euler)
    set_sampling_timesteps(euler, 30)
    # "trailing" alone would give 966 as the second timestep; the original uses 965 (ref §6.6 item 2).
    assert euler.timesteps.tolist() == original_timesteps(30).float().tolist()
    assert len(euler.sigmas) == 31 and euler.sigmas[-1] == 0

    ddim = build_scheduler("ddim")
    assert not uses_original_timesteps(ddim)
    set_sampling_timesteps(ddim, 30)
    assert len(ddim.timesteps) == 30

    karras = build_scheduler("euler", use_karras_sigmas=True)
    assert not uses_original_timesteps(karras)


def test_initial_noise_scale():
    ours = build_scheduler("dpmpp_2s_ancestral")
    assert_within_ulps(initial_noise_scale(ours), 14.64881420135498)  # right even before set_timesteps
    set_sampling_timesteps(ours, 4)
    assert_within_ulps(initial_noise_scale(ours), 14.64881420135498)  # sqrt(1 + sigma_max^2) in float32
    euler = build_scheduler("euler")
    set_sampling_timesteps(euler, 4)
    # diffusers' own init_noise_sigma is sigma_max under "trailing"; CCEdit uses sqrt(1 + sigma_max^2).
    assert float(euler.init_noise_sigma) == pytest.approx(14.6146, abs=1e-4)
    assert initial_noise_scale(euler) == pytest.approx(14.648814, abs=1e-4)
    for name in ("ddim", "dpmpp_2m", "unipc"):
        scheduler = build_scheduler(name)
        set_sampling_timesteps(scheduler, 4)
        assert initial_noise_scale(scheduler) == 1.0


def test_registry_classes():
    assert SCHEDULERS["euler"] is EulerDiscreteScheduler
    assert SCHEDULERS["ddim"] is DDIMScheduler
    assert SCHEDULERS["dpmpp_2s_ancestral"] is DPMPP2SAncestralScheduler
    assert torch.is_tensor(build_scheduler("dpmpp_2s_ancestral").sigmas)


@pytest.mark.parametrize(
    ("name", "steps", "completing"),
    [("euler", [0, 1, 2], [0, 1, 2]), ("dpmpp_2s_ancestral", [0, 0, 1, 1, 2], [1, 3, 4])],
)
def test_evaluation_steps_and_the_evaluations_that_complete_them(name, steps, completing):
    scheduler = build_scheduler(name)
    set_sampling_timesteps(scheduler, 3)
    assert evaluation_steps(scheduler) == steps
    assert [i for i in range(len(steps)) if completes_step(steps, i)] == completing
