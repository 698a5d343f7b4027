"""The original CCEdit noise discretisation: the 1,000-entry sigma table, the sampling timesteps and quantisation.

CCEdit samples in sigma space (x = x0 + sigma * eps) on the Stable Diffusion 1.5 DDPM schedule and feeds the network
the *integer index* of the table sigma nearest to the sampler's sigma (ref §3 "Discretisation" and "Denoiser", §6.2).
Every function here reproduces the original's arithmetic bit for bit, including its dtypes, because the grid sigmas
must equal table entries exactly for the quantisation to land on the intended timestep.
"""

from __future__ import annotations

import base64
import functools

import numpy as np
import torch

from .sigma_table import SD15_SIGMAS_FLOAT32_LE_BASE64

# Stable Diffusion 1.5's "scaled_linear" betas, the only schedule CCEdit was trained and sampled with.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012


@functools.lru_cache(maxsize=4)
def _alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    # float64 throughout: the original squares a float64 *torch* linspace and takes the product in numpy float64.
    # numpy's linspace rounds some interior points differently (alpha_bar then moves by ~1e-18), so torch it is.
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return np.cumprod(1.0 - betas.numpy(), axis=0)


def original_alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
) -> torch.Tensor:
    """alpha_bar_t, the cumulative product of (1 - beta) of the "scaled_linear" schedule, float64, `(T,)`."""
    return torch.from_numpy(_alphas_cumprod(num_train_timesteps, beta_start, beta_end).copy())


@functools.lru_cache(maxsize=4)
def _sigma_table(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    derived = _derived_sigma_table(num_train_timesteps, beta_start, beta_end)
    if (num_train_timesteps, beta_start, beta_end) != (NUM_TRAIN_TIMESTEPS, BETA_START, BETA_END):
        return derived
    # The original's own values (sigma_table.py says why they are stored): the derivation agrees within one ulp.
    stored = torch.frombuffer(bytearray(base64.b64decode("".join(SD15_SIGMAS_FLOAT32_LE_BASE64))), dtype=torch.float32)
    if stored.shape != derived.shape or not bool(((stored.view(torch.int32) - derived.view(torch.int32)).abs() <= 1).all()):
        raise RuntimeError("the stored SD-1.5 sigma table does not match the schedule: ccedit's files are damaged")
    return stored


def _derived_sigma_table(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    alphas_cumprod = _alphas_cumprod(num_train_timesteps, beta_start, beta_end)
    # The ratio is rounded to float32 *before* the square root, which is then taken in float32 (ref §6.2); taking
    # the root in float64 first would move some entries by one ulp and break exact quantisation.
    ratio = torch.tensor((1.0 - alphas_cumprod) / alphas_cumprod, dtype=torch.float32)
    return torch.sqrt(ratio)


def original_sigmas(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
) -> torch.Tensor:
    """
    The original sigma table, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), indexed by DDPM timestep.

    Betas are the squares of a float64 linspace from sqrt(`beta_start`) to sqrt(`beta_end`); alpha_bar is their float64
    cumulative product of (1 - beta); the ratio is rounded to float32 and its square root taken in float32 (ref §6.2).
    For the defaults, sigma_0 ~ 0.02917 and sigma_999 ~ 14.6146.

    Args:
        num_train_timesteps (`int`, defaults to 1000): number of DDPM training timesteps.
        beta_start (`float`, defaults to 0.00085): first beta of the "scaled_linear" schedule.
        beta_end (`float`, defaults to 0.012): last beta of the "scaled_linear" schedule.

    Returns:
        `torch.Tensor`: float32, shape `(num_train_timesteps,)`, ascending in timestep.
    """
    return _sigma_table(num_train_timesteps, beta_start, beta_end).clone()


def original_timesteps(num_inference_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """
    The original's sampling timesteps: floor(linspace(T - 1, 0, n, endpoint=False)), in descending order.

    For n = 30 and T = 1000 these are 999, 965, ..., 33: the last one is neither 0 nor 1, and diffusers' "trailing"
    spacing differs for many n (ref §5 item 18). numpy's float64 linspace is used on purpose: for some n (99, 185, ...)
    it rounds an exact integer down by one ulp and the floor then differs from exact integer arithmetic, and the
    original has that quirk too.

    Args:
        num_inference_steps (`int`): number of sampler steps n, at least 1.
        num_train_timesteps (`int`, defaults to 1000): number of DDPM training timesteps T.

    Returns:
        `torch.Tensor`: int64, shape `(num_inference_steps,)`, descending, starting at T - 1.
    """
    if num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
    steps = np.linspace(num_train_timesteps - 1, 0, num_inference_steps, endpoint=False)
    return torch.from_numpy(np.floor(steps).astype(np.int64))


def quantize_sigma(
    sigma: float | torch.Tensor, table: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The index and value of the table sigma nearest to `sigma` (the original `DiscreteDenoiser`'s quantisation).

    The distance is taken in float32 and ties go to the first (lowest) index, as `argmin` resolves them (ref §6.2).

    Args:
        sigma (`float` or `torch.Tensor`): one sigma or a tensor of sigmas of any shape.
        table (`torch.Tensor`, *optional*): the sigma table to search; defaults to `original_sigmas()`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the int64 index and the float32 table sigma, each shaped like `sigma`.
    """
    table = _sigma_table(NUM_TRAIN_TIMESTEPS, BETA_START, BETA_END) if table is None else table
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    table = table.to(device=sigma.device, dtype=torch.float32)
    distances = (sigma.reshape(-1, 1) - table.reshape(1, -1)).abs()  # (num_sigmas, num_table)
    index = distances.argmin(dim=1).reshape(sigma.shape)
    return index, table[index]
