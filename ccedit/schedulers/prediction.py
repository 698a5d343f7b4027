"""What the network predicts, mapped onto one contract: the denoised estimate of the sample.

Every scheduler's step turns the network's prediction into a denoised estimate of the clean sample and moves
towards it. Code that steers sampling (known keyframes, the source kept outside a region, SDEdit's start) speaks of
clean samples, so it goes through the `Parameterisation` of the scheduler (`parameterisation(scheduler)`):

- `SigmaSpaceEpsilon`: x = x0 + sigma * eps, D = x - sigma * eps (Euler, Euler ancestral, DPM++(2S) ancestral);
- `VariancePreservingEpsilon`: x = sqrt(a) * x0 + sqrt(1 - a) * eps (DDIM, DPM-Solver, UniPC);
- `VariancePreservingVelocity`: the same forward process, v = sqrt(a) * eps - sqrt(1 - a) * x0, so
  D = sqrt(a) * x - sqrt(1 - a) * v (`prediction_type="v_prediction"`);
- `FlowMatching`: x = (1 - s) * x0 + s * noise, v = noise - x0, D = x - s * v (`FlowMatchEulerDiscreteScheduler`,
  or a scheduler with `use_flow_sigmas` and `prediction_type="flow_prediction"`, such as UniPC for Wan2.1).

Each answers three questions for one evaluation: `prediction_for_clean` (the network output whose denoised
estimate is a given clean sample), `denoised` (the estimate from a prediction) and `noised` (the forward process).
`timestep` is the evaluation's entry of `scheduler.timesteps` and `index` its position there. The variance-
preserving adapters read `alphas_cumprod[timestep]`; the sigma-space and flow ones read the sigma at `index`, since
flow schedulers' integer timesteps (UniPC) are not exact sigmas and their step counter is unset before the first
step. Arithmetic is in float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = [
    "FlowMatching",
    "Parameterisation",
    "SigmaSpaceEpsilon",
    "VariancePreservingEpsilon",
    "VariancePreservingVelocity",
    "is_flow_matching",
    "is_sigma_space",
    "parameterisation",
]


def is_flow_matching(scheduler: SchedulerMixin) -> bool:
    """Whether `scheduler` follows a flow-matching schedule, x = (1 - s) * x0 + s * noise."""
    config = scheduler.config
    return (isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def is_sigma_space(scheduler: SchedulerMixin) -> bool:
    """
    Whether `scheduler` samples in sigma space, x = x0 + sigma * eps (Euler, Euler ancestral, DPM++(2S) ancestral).

    Such schedulers keep a `sigmas` table and scale the model input, so their `init_noise_sigma` exceeds 1. DDIM,
    DPM-Solver and UniPC sample in the variance-preserving space (init_noise_sigma = 1), even those that also keep
    a `sigmas` attribute; flow-matching schedulers start from the noise itself and may keep no `init_noise_sigma`.
    """
    return getattr(scheduler, "sigmas", None) is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1


def _at(values: torch.Tensor, position: int, like: torch.Tensor) -> torch.Tensor:
    return values[position].to(like.device, torch.float32)


class Parameterisation(ABC):
    """How one kind of network output relates to the sample and its clean value at one evaluation."""

    @abstractmethod
    def prediction_for_clean(self, scheduler: SchedulerMixin, sample: torch.Tensor, clean: torch.Tensor,
                             timestep: torch.Tensor, index: int) -> torch.Tensor:
        """The prediction for which the scheduler's denoised estimate of `sample` is `clean`.

        Replacing the network's prediction by this one keeps latents whose clean value is known on that value at
        every step, whatever the scheduler does with the estimate.
        """

    @abstractmethod
    def denoised(self, scheduler: SchedulerMixin, sample: torch.Tensor, prediction: torch.Tensor,
                 timestep: torch.Tensor, index: int) -> torch.Tensor:
        """The denoised estimate of `sample` that the scheduler takes from `prediction`."""

    @abstractmethod
    def noised(self, scheduler: SchedulerMixin, clean: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor,
               index: int) -> torch.Tensor:
        """`clean` noised with `noise` to this evaluation of the schedule (the forward process), in `clean`'s dtype."""


class SigmaSpaceEpsilon(Parameterisation):
    """x = x0 + sigma * eps; sigma is the evaluation's, `denoising_sigmas` where the scheduler quantises it."""

    @staticmethod
    def _sigma(scheduler: SchedulerMixin, index: int, like: torch.Tensor) -> torch.Tensor:
        return _at(getattr(scheduler, "denoising_sigmas", scheduler.sigmas), index, like)

    def prediction_for_clean(self, scheduler, sample, clean, timestep, index):
        return (sample.float() - clean.float()) / self._sigma(scheduler, index, sample)

    def denoised(self, scheduler, sample, prediction, timestep, index):
        return sample.float() - self._sigma(scheduler, index, sample) * prediction.float()

    def noised(self, scheduler, clean, noise, timestep, index):
        # the schedule's sigma (not the quantised one): where the original's sampler starts SDEdit
        return clean + scheduler.sigmas[index].to(clean.device, clean.dtype) * noise


class VariancePreservingEpsilon(Parameterisation):
    """x = sqrt(a) * x0 + sqrt(1 - a) * eps with `a = alphas_cumprod[timestep]`."""

    @staticmethod
    def _alpha(scheduler: SchedulerMixin, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _at(scheduler.alphas_cumprod, int(timestep), like)

    def prediction_for_clean(self, scheduler, sample, clean, timestep, index):
        alpha = self._alpha(scheduler, timestep, sample)
        return (sample.float() - alpha.sqrt() * clean.float()) / (1 - alpha).sqrt()

    def denoised(self, scheduler, sample, prediction, timestep, index):
        alpha = self._alpha(scheduler, timestep, sample)
        return (sample.float() - (1 - alpha).sqrt() * prediction.float()) / alpha.sqrt()

    def noised(self, scheduler, clean, noise, timestep, index):
        # the scheduler's own forward process, which every variance-preserving diffusers scheduler has
        return scheduler.add_noise(clean.expand_as(noise), noise, torch.as_tensor(timestep).reshape(1))


class VariancePreservingVelocity(VariancePreservingEpsilon):
    """The variance-preserving forward process with v = sqrt(a) * eps - sqrt(1 - a) * x0 predicted."""

    def prediction_for_clean(self, scheduler, sample, clean, timestep, index):
        alpha = self._alpha(scheduler, timestep, sample)
        return (alpha.sqrt() * sample.float() - clean.float()) / (1 - alpha).sqrt()

    def denoised(self, scheduler, sample, prediction, timestep, index):
        alpha = self._alpha(scheduler, timestep, sample)
        return alpha.sqrt() * sample.float() - (1 - alpha).sqrt() * prediction.float()


class FlowMatching(Parameterisation):
    """x = (1 - s) * x0 + s * noise with v = noise - x0 predicted; s is `sigmas[index]`, one evaluation per step."""

    def prediction_for_clean(self, scheduler, sample, clean, timestep, index):
        return (sample.float() - clean.float()) / _at(scheduler.sigmas, index, sample)

    def denoised(self, scheduler, sample, prediction, timestep, index):
        return sample.float() - _at(scheduler.sigmas, index, sample) * prediction.float()

    def noised(self, scheduler, clean, noise, timestep, index):
        # FlowMatchEulerDiscreteScheduler.scale_noise's expression, without its dependence on the step counter
        sigma = scheduler.sigmas[index].to(clean.device, clean.dtype)
        return sigma * noise + (1.0 - sigma) * clean


def parameterisation(scheduler: SchedulerMixin) -> Parameterisation:
    """
    The adapter for what `scheduler` expects the network to predict.

    Raises:
        `ValueError`: for a combination the sampler does not know: a flow schedule without flow prediction (or the
            reverse), a sigma-space scheduler predicting anything but noise, or a prediction type such as "sample".
    """
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    name = type(scheduler).__name__
    if is_flow_matching(scheduler):
        config = scheduler.config
        flow_schedule = isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or config.get("use_flow_sigmas")
        if not flow_schedule or config.get("prediction_type", "flow_prediction") != "flow_prediction":
            raise ValueError(f"{name} mixes a flow-matching setting with another one (prediction_type "
                             f"{prediction_type!r}); set both use_flow_sigmas=True and "
                             "prediction_type='flow_prediction', or neither")
        return FlowMatching()
    if is_sigma_space(scheduler):
        if prediction_type != "epsilon":
            raise ValueError(f"the sampler supports sigma-space schedulers ({name}) only with prediction_type "
                             f"'epsilon', got {prediction_type!r}; use a variance-preserving one (ddim, unipc)")
        return SigmaSpaceEpsilon()
    if prediction_type == "epsilon":
        return VariancePreservingEpsilon()
    if prediction_type == "v_prediction":
        return VariancePreservingVelocity()
    raise ValueError(f"{name}'s prediction_type {prediction_type!r} is not supported by the sampler; "
                     "use 'epsilon', 'v_prediction' or, with flow sigmas, 'flow_prediction'")
