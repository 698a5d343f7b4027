"""Schedulers: the original sigma table and timesteps, CCEdit's denoiser, DPM++(2S) ancestral, a name registry.

Every scheduler is built with Stable Diffusion 1.5's training settings. Two helpers hide how CCEdit's sampling
conventions map onto diffusers schedulers:

- `set_sampling_timesteps` gives schedulers the original's timesteps where diffusers lets a caller choose them
  (ref §5 item 18, §6.6 item 2);
- `initial_noise_scale` is CCEdit's sqrt(1 + sigma_max^2) for sigma-space schedulers (ref §5 item 16, §6.6 item 1).

What the network predicts (noise, velocity, flow) is mapped onto one denoised-sample contract in `prediction.py`
(`parameterisation(scheduler)`), which keyframe pinning, region edits and SDEdit go through.

`evaluation_steps` and `completes_step` tell which sampler step a network evaluation belongs to, for callers that
check the latent after every step while a scheduler such as DPM++(2S) evaluates twice per step.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import UserError
from .denoiser import DiscreteEpsDenoiser
from .dpmpp_2s_ancestral import DPMPP2SAncestralScheduler, DPMPP2SAncestralSchedulerOutput
from .prediction import Parameterisation, is_flow_matching, is_sigma_space, parameterisation
from .sigmas import original_alphas_cumprod, original_sigmas, original_timesteps, quantize_sigma

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLING_CONVENTIONS",
    "SCHEDULERS",
    "DPMPP2SAncestralScheduler",
    "DPMPP2SAncestralSchedulerOutput",
    "DiscreteEpsDenoiser",
    "Parameterisation",
    "build_scheduler",
    "completes_step",
    "evaluation_steps",
    "initial_noise_scale",
    "is_flow_matching",
    "is_sigma_space",
    "original_alphas_cumprod",
    "original_sigmas",
    "original_timesteps",
    "parameterisation",
    "quantize_sigma",
    "set_sampling_timesteps",
    "uses_original_timesteps",
]

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "dpmpp_2s_ancestral": DPMPP2SAncestralScheduler,
}

# Stable Diffusion 1.5's training schedule, shared by every scheduler.
SD15_SETTINGS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

# "trailing" spacing everywhere so that every scheduler starts at timestep 999, the top of the table, like the
# original sampler; diffusers' SD-1.5 default ("leading", steps_offset 1) would start below it.
_SCHEDULER_SETTINGS: dict[str, dict[str, Any]] = {
    # The settings under which EulerDiscreteScheduler matches the original EulerEDMSampler (ref §6.6).
    "euler": {
        "timestep_spacing": "trailing",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "final_sigmas_type": "zero",
        "timestep_type": "discrete",
        "rescale_betas_zero_snr": False,
    },
    "euler_ancestral": {"timestep_spacing": "trailing"},
    "ddim": {"timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": False},
    "dpmpp_2m": {"timestep_spacing": "trailing", "algorithm_type": "dpmsolver++", "solver_order": 2},
    "unipc": {"timestep_spacing": "trailing"},
    "dpmpp_2s_ancestral": {},
}

# Config switches under which a scheduler's timesteps stop being plain DDPM table indices.
_NON_INDEX_TIMESTEP_FLAGS = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
)


def build_scheduler(name: str, **overrides: Any) -> SchedulerMixin:
    """
    Build a scheduler by its short name with Stable Diffusion 1.5's settings.

    Args:
        name (`str`): one of `SCHEDULERS`: "euler", "euler_ancestral", "ddim", "dpmpp_2m", "unipc",
            "dpmpp_2s_ancestral" (the original CCEdit sampler).
        **overrides: constructor arguments that replace the defaults, e.g. `eta=0.0`.

    Returns:
        `SchedulerMixin`: the scheduler; call `set_sampling_timesteps` on it before sampling.

    Raises:
        `UserError`: for an unknown name or an argument the scheduler does not take.
    """
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    scheduler_class = SCHEDULERS[name]
    accepted = set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise UserError(
            f"scheduler {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(accepted))}"
        )
    settings = {**SD15_SETTINGS, **_SCHEDULER_SETTINGS[name], **overrides}
    return scheduler_class(**settings)


def uses_original_timesteps(scheduler: SchedulerMixin) -> bool:
    """
    Whether `set_sampling_timesteps` hands `scheduler` the original's timesteps.

    True when its `set_timesteps` takes `timesteps=` and, in its configuration, timesteps are DDPM table indices as
    in the original (no Karras, exponential, beta, Lu-lambda or flow sigmas, discrete timestep type). Among the
    registered schedulers that is "euler" and "dpmpp_2m". "dpmpp_2s_ancestral" builds the original's timesteps
    itself. Flow-matching schedulers never do: FlowMatchEulerDiscreteScheduler takes `timesteps=` but shifts the
    sigmas it derives from them and not the timesteps, so the two would disagree.
    """
    if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters or is_flow_matching(scheduler):
        return False
    config = scheduler.config
    if any(config.get(flag, False) for flag in _NON_INDEX_TIMESTEP_FLAGS):
        return False
    return config.get("timestep_type", "discrete") == "discrete"


# How a model samples, saved with it (`CCEditPipeline`'s `sampling_convention`): "ccedit" is the original's
# timesteps and sqrt(1 + sigma_max^2) initial scale; "diffusers" is each scheduler's own spacing and
# `init_noise_sigma`, what models trained and released for diffusers (AnimateDiff) expect.
SAMPLING_CONVENTIONS = ("ccedit", "diffusers")


def set_sampling_timesteps(
    scheduler: SchedulerMixin, num_inference_steps: int, device: str | torch.device | None = None,
    convention: str = "ccedit",
) -> None:
    """
    Set `scheduler` up for `num_inference_steps` steps on the original's timesteps where it can take them.

    The original samples at floor(linspace(999, 0, n, endpoint=False)); diffusers' "trailing" spacing gives the same
    timesteps only for some n (30 steps differ, ref §6.6 item 2). Schedulers that accept explicit `timesteps=`
    (see `uses_original_timesteps`) get them; the others use their own spacing via `set_timesteps(n)`.

    Args:
        scheduler (`SchedulerMixin`): the scheduler to set up.
        num_inference_steps (`int`): number of sampler steps.
        device (`str` or `torch.device`, *optional*): where the scheduler keeps its timesteps.
    """
    if convention == "ccedit" and uses_original_timesteps(scheduler):
        timesteps = original_timesteps(num_inference_steps, scheduler.config.num_train_timesteps)
        scheduler.set_timesteps(timesteps=timesteps.tolist(), device=device)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    logger.debug("%s timesteps: %s", type(scheduler).__name__, scheduler.timesteps.tolist())


def initial_noise_scale(scheduler: SchedulerMixin, convention: str = "ccedit") -> float:
    """
    The factor by which a N(0, I) draw becomes the initial latent.

    For sigma-space schedulers this is CCEdit's sqrt(1 + sigma_max^2) (14.648814 for SD 1.5), computed in float32
    as the original does; diffusers' `init_noise_sigma` is sigma_max under "trailing" spacing, which moved the tiny
    Euler result by 0.12 (ref §5 item 16, §6.6 item 1). Other schedulers use their `init_noise_sigma`; flow-matching
    ones start from the noise itself (sigma 1), and FlowMatchEulerDiscreteScheduler keeps no `init_noise_sigma`.

    Args:
        scheduler (`SchedulerMixin`): a scheduler after `set_sampling_timesteps`.

    Returns:
        `float`: the initial scale.
    """
    if convention != "ccedit" or not is_sigma_space(scheduler):
        return float(getattr(scheduler, "init_noise_sigma", 1.0))
    sigma_max = torch.as_tensor(scheduler.sigmas, dtype=torch.float32).max()
    return float(torch.sqrt(1.0 + sigma_max**2.0))


def evaluation_steps(scheduler: SchedulerMixin) -> list[int]:
    """The sampler step of each network evaluation, in call order, for a scheduler after `set_sampling_timesteps`."""
    # Schedulers with several evaluations per step (DPMPP2SAncestralScheduler) say so in `solver_steps`; the others
    # evaluate once per entry of `timesteps`.
    return getattr(scheduler, "solver_steps", torch.arange(len(scheduler.timesteps))).tolist()


def completes_step(steps: list[int], index: int) -> bool:
    """Whether evaluation `index` is the last of its sampler step, given `steps` from `evaluation_steps`."""
    return index + 1 == len(steps) or steps[index + 1] != steps[index]
