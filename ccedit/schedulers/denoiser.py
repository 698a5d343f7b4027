"""CCEdit's denoiser: the discretised sigmas, sigma -> network timestep, the eps scalings, shared by sampling and training.

The original wraps its network in a `DiscreteDenoiser` with `EpsScaling` and `EpsWeighting` on the 1,000-entry
SD-1.5 sigma table (ref §3 "Denoiser", §6 "DiscreteDenoiser"): for a noisy latent x = x0 + sigma * eps,

    D(x, sigma) = c_skip * x + c_out * F(c_in * x, t(sigma)),   c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1),

where t(sigma) is the index of the nearest table sigma, which also replaces sigma in the scalings. The loss weight
of `EpsWeighting` is sigma^-2, so the weighted denoising loss sigma^-2 |D - x0|^2 equals the noise-prediction loss
|F - eps|^2 exactly (on table sigmas): the training loss uses that form. The arithmetic here is the sampler's, bit
for bit, because the DPM++(2S) scheduler's outputs must equal the original's.
"""

from __future__ import annotations

import torch

from .sigmas import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS, original_sigmas, quantize_sigma


class DiscreteEpsDenoiser:
    r"""CCEdit's eps-parameterised denoiser on the discretised SD-1.5 schedule (ref §3, §6.2).

    Args:
        num_train_timesteps (`int`, defaults to 1000): size of the sigma table.
        beta_start (`float`, defaults to 0.00085), beta_end (`float`, defaults to 0.012): the "scaled_linear" betas.
    """

    def __init__(
        self, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
    ):
        self.sigmas = original_sigmas(num_train_timesteps, beta_start, beta_end)  # (T,) float32, by timestep

    @property
    def num_train_timesteps(self) -> int:
        return len(self.sigmas)

    def quantize(self, sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network timestep (nearest table index, int64) and the table sigma of each `sigma`."""
        return quantize_sigma(sigma, self.sigmas)

    def sigma_for_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The table sigma of each integer timestep, float32, on the timesteps' device."""
        return self.sigmas.to(timestep.device)[timestep.long()]

    @staticmethod
    def c_in(sigma: torch.Tensor) -> torch.Tensor:
        """Input scaling 1 / sqrt(sigma^2 + 1): the reciprocal first, as the original's `EpsScaling` computes it."""
        return 1.0 / (sigma**2.0 + 1.0) ** 0.5

    @staticmethod
    def c_out(sigma: torch.Tensor) -> torch.Tensor:
        """Output scaling of the eps prediction, -sigma (c_skip is 1)."""
        return -sigma

    @staticmethod
    def denoised(model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D = c_skip * x + c_out * eps = eps * -sigma + x, in the original's operation order, in float32."""
        return model_output.to(torch.float32) * -sigma + sample.to(torch.float32)

    @staticmethod
    def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
        """`EpsWeighting`: sigma^-2, under which the denoising loss equals the eps-MSE."""
        return sigma**-2.0

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """Training timesteps, uniform over the table's indices (the original's discrete sigma sampling), int64."""
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator).to(device)

    def noisy_input(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The network input for clean `latents` noised at `timesteps`: c_in * (x0 + sigma * noise), batch first."""
        sigma = self.sigma_for_timestep(timesteps).to(latents.dtype)
        sigma = sigma.reshape(-1, *[1] * (latents.ndim - 1))
        return (latents + noise * sigma) * self.c_in(sigma)
