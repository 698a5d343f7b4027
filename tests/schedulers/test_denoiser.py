"""CCEdit's denoiser: the scalings the sampler uses and the training loss shares."""

import torch

from ccedit.schedulers import DiscreteEpsDenoiser, DPMPP2SAncestralScheduler, original_sigmas


def test_the_scheduler_scales_and_denoises_through_the_denoiser():
    denoiser = DiscreteEpsDenoiser()
    scheduler = DPMPP2SAncestralScheduler()
    scheduler.set_timesteps(4)
    x = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn_like(x)
    sigma = denoiser.sigma_for_timestep(scheduler.timesteps[:1])[0]
    assert torch.equal(scheduler.scale_model_input(x, scheduler.timesteps[0]), x * denoiser.c_in(sigma))
    out = scheduler.step(eps, scheduler.timesteps[0], x)
    assert torch.equal(out.pred_original_sample, denoiser.denoised(eps, x, sigma))


def test_weighted_denoising_loss_equals_eps_mse():
    denoiser = DiscreteEpsDenoiser()
    g = torch.Generator().manual_seed(1)
    x0, noise, eps_hat = (torch.randn(3, 4, 2, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    t = denoiser.sample_timesteps(3, generator=g)
    sigma = denoiser.sigma_for_timestep(t).double().reshape(-1, 1, 1, 1, 1)
    x = x0 + sigma * noise
    denoised = x + denoiser.c_out(sigma) * eps_hat  # c_skip = 1
    weighted = denoiser.loss_weight(sigma) * (denoised - x0) ** 2
    torch.testing.assert_close(weighted, (eps_hat - noise) ** 2)
    # and the network input is c_in * x
    noisy = denoiser.noisy_input(x0, noise, t)
    torch.testing.assert_close(noisy, x * denoiser.c_in(sigma))


def test_training_timesteps_cover_the_table_and_quantise_to_themselves():
    denoiser = DiscreteEpsDenoiser()
    t = denoiser.sample_timesteps(20000, generator=torch.Generator().manual_seed(2))
    assert t.dtype == torch.int64 and t.min() == 0 and t.max() == 999
    index, sigma = denoiser.quantize(denoiser.sigma_for_timestep(t))
    assert torch.equal(index, t) and torch.equal(sigma, original_sigmas()[t])
