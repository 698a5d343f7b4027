"""The denoising loop with classifier-free guidance, independent of any network.

`denoise` runs one window of latents through every scheduler timestep. The network is any callable
`model_fn(latent_model_input, timestep) -> prediction` (noise, velocity or flow: whatever the scheduler's
`prediction_type` says; `schedulers.parameterisation` maps each onto the denoised estimate), so the same loop serves
the full trident network, a windowed wrapper around it (which can split frames inside `model_fn`), and replays of
stored network outputs in tests.
A caller that processes a long video window by window calls `denoise` once per window, with the scheduler set up
again (`set_sampling_timesteps`) before each call, because diffusers schedulers keep a step counter.

Initial latents follow CCEdit's convention (ref §3 "Initial noise"): sigma-space schedulers start from
(a * prior + b * noise) * sqrt(1 + sigma_max^2); see `prepare_initial_latents` and `sdedit_start`.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm import tqdm

from ..errors import UserError
from ..schedulers import Parameterisation, completes_step, evaluation_steps, initial_noise_scale, parameterisation
from .region import SourceRegion

logger = logging.getLogger(__name__)

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class KnownLatents:
    """Clean latents known at some frames (edited keyframes), which denoising keeps.

    At every evaluation the prediction of those frames is replaced by the one whose denoised estimate is the known
    latent (`Parameterisation.prediction_for_clean`), so the other frames are denoised around it; the result holds
    it exactly.

    Args:
        frames (`tuple[int, ...]`): the frames, along the latents' frame axis.
        latents (`torch.Tensor`): `(batch or 1, channels, len(frames), h, w)`.
    """

    frames: tuple[int, ...]
    latents: torch.Tensor

    def __post_init__(self):
        if self.latents.ndim != 5 or self.latents.shape[2] != len(self.frames):
            raise ValueError(f"known latents must be (batch, channels, {len(self.frames)}, h, w), got {tuple(self.latents.shape)}")

    def hold(self, scheduler: SchedulerMixin, prediction: Parameterisation, latents: torch.Tensor,
             model_output: torch.Tensor, timestep: torch.Tensor, index: int) -> torch.Tensor:
        """`model_output` with, at the known frames, the prediction whose denoised estimate is the known latent."""
        frames = list(self.frames)
        target = self.latents.to(latents.device).expand(latents.shape[0], -1, -1, -1, -1)
        held = prediction.prediction_for_clean(scheduler, latents[:, :, frames], target, timestep, index)
        model_output = model_output.clone()
        model_output[:, :, frames] = held.to(model_output.dtype)
        return model_output

    def pin(self, latents: torch.Tensor) -> torch.Tensor:
        """`latents` with the known frames set to their known values."""
        latents = latents.clone()
        latents[:, :, list(self.frames)] = self.latents.to(latents.device, latents.dtype).expand(
            latents.shape[0], -1, -1, -1, -1
        )
        return latents


def guided_noise_prediction(
    model_fn: ModelFn,
    scheduler: SchedulerMixin,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """
    One classifier-free-guided evaluation (Ho & Salimans 2022): eps = eps_u + s * (eps_c - eps_u).

    With `guidance_scale > 1` the network sees the batch `[x; x]`, unconditional half first (ref §3 "CFG"); otherwise
    it sees `x` alone, in one pass. The original guides the denoised D rather than eps; both are equal up to rounding
    because D is affine in eps with coefficients shared by the two halves. The same holds for a velocity or flow
    prediction, so the prediction is guided whatever it is.

    Args:
        model_fn (`Callable`): `model_fn(latent_model_input, timestep) -> prediction`, batch `2B` under guidance,
            else `B`.
        scheduler (`SchedulerMixin`): supplies `scale_model_input` where it has one (flow-matching Euler has none:
            its network sees the sample as it is).
        latents (`torch.Tensor`): the current latents, batch `B` first.
        timestep (`torch.Tensor`): the current entry of the scheduler's `timesteps`.
        guidance_scale (`float`): the guidance scale s.

    Returns:
        `torch.Tensor`: the guided prediction, shaped like `latents`.
    """
    use_guidance = guidance_scale > 1.0
    latent_model_input = torch.cat([latents, latents]) if use_guidance else latents
    if hasattr(scheduler, "scale_model_input"):
        latent_model_input = scheduler.scale_model_input(latent_model_input, timestep)
    noise_pred = model_fn(latent_model_input, timestep)
    if not use_guidance:
        return noise_pred
    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
    return noise_pred_uncond + guidance_scale * (noise_pred_cond - noise_pred_uncond)


def denoise(
    model_fn: ModelFn,
    scheduler: SchedulerMixin,
    latents: torch.Tensor,
    *,
    guidance_scale: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
    progress: bool = True,
    step_kwargs_fn: Callable[[int], dict[str, Any]] | None = None,
    timesteps: torch.Tensor | None = None,
    known: KnownLatents | None = None,
    region: SourceRegion | None = None,
) -> torch.Tensor:
    """
    Denoise one window of latents through the scheduler's timesteps with classifier-free guidance.

    The loop is diffusers' generic one (`scale_model_input`, network, `step`), so any scheduler works, including
    those with several evaluations per step such as `DPMPP2SAncestralScheduler`, whose `timesteps` list each one.

    Args:
        model_fn (`Callable`): `model_fn(latent_model_input, timestep) -> prediction`. Under guidance the input is
            `[x; x]` (unconditional first, batch `2B`), otherwise `x` (batch `B`).
        scheduler (`SchedulerMixin`): a scheduler after `set_sampling_timesteps` (again before each window).
        latents (`torch.Tensor`): initial latents, already scaled (`prepare_initial_latents` or `sdedit_start`),
            e.g. `(batch, channels, frames, height, width)`.
        guidance_scale (`float`): classifier-free guidance scale; `<= 1` runs one pass without guidance.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): source of the schedulers' noise; passed
            to `step` when it takes one.
        callback (`Callable`, *optional*): `callback(step_index, timestep, latents)` after each `step`; latents it
            returns replace the loop's.
        progress (`bool`, defaults to `True`): show a progress bar on stderr.
        step_kwargs_fn (`Callable`, *optional*): `step_kwargs_fn(step_index) -> dict` of extra `step` arguments, e.g.
            `{"noise": ...}` to replay a stored run.
        timesteps (`torch.Tensor`, *optional*): the timesteps to run; defaults to `scheduler.timesteps`
            (`sdedit_start` returns a shortened tail).
        known (`KnownLatents`, *optional*): frames whose clean latent is known and kept.
        region (`SourceRegion`, *optional*): a region edit: outside its mask the source is kept (`region.py`).

    Returns:
        `torch.Tensor`: the denoised latents.
    """
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    # Stochastic schedulers (Euler ancestral, ours) draw from `generator` in `step`; UniPC's `step` rejects it.
    step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    # For a region: the sampler step of each evaluation, and the schedule's index of the first one run here.
    steps = evaluation_steps(scheduler) if region is not None else []
    # Each evaluation's position in `scheduler.timesteps`, which the parameterisation reads its sigma at.
    first = len(scheduler.timesteps) - len(timesteps)
    prediction = parameterisation(scheduler)
    for step_index, timestep in enumerate(tqdm(timesteps, file=sys.stderr, disable=not progress)):
        index = first + step_index
        if region is not None and (step_index == 0 or completes_step(steps, index - 1)):
            latents = region.keep_source(latents, region.noised(scheduler, prediction, timestep, index))
        model_output = guided_noise_prediction(model_fn, scheduler, latents, timestep, guidance_scale)
        if known is not None:
            model_output = known.hold(scheduler, prediction, latents, model_output, timestep, index)
        if region is not None:
            model_output = region.source_prediction(scheduler, prediction, latents, model_output, timestep, index)
        step_kwargs: dict[str, Any] = {"generator": generator} if step_takes_generator else {}
        if step_kwargs_fn is not None:
            step_kwargs.update(step_kwargs_fn(step_index))
        latents = scheduler.step(model_output, timestep, latents, **step_kwargs, return_dict=False)[0]
        if callback is not None:
            replaced = callback(step_index, timestep, latents)
            latents = latents if replaced is None else replaced
    # The estimate held the known frames (and the source outside a region); setting them removes the last rounding.
    latents = known.pin(latents) if known is not None else latents
    return region.keep_source(latents, region.latents) if region is not None else latents


def prepare_initial_latents(
    noise: torch.Tensor,
    scheduler: SchedulerMixin,
    *,
    prior: torch.Tensor | None = None,
    prior_coefficient: float = 0.0,
    noise_coefficient: float = 1.0,
    convention: str = "ccedit",
) -> torch.Tensor:
    """
    The initial latent (prior_coefficient * prior + noise_coefficient * noise) * scale (ref §3 "Initial noise").

    The anchor prior (an edited reference frame, the source video, or their sum, already VAE-encoded and scaled) is
    mixed in *before* the scaling, as the original does. The scale is `initial_noise_scale(scheduler)`:
    sqrt(1 + sigma_max^2) for sigma-space schedulers, `init_noise_sigma` otherwise.

    Args:
        noise (`torch.Tensor`): N(0, I), `(batch, channels, frames, height, width)`.
        scheduler (`SchedulerMixin`): a scheduler after `set_sampling_timesteps`.
        prior (`torch.Tensor`, *optional*): the prior latent, `(batch, channels, frames, height, width)` or one image
            latent `(batch, channels, height, width)` repeated over frames.
        prior_coefficient (`float`, defaults to 0.0): a; the README's TVI2V setting is 0.03.
        noise_coefficient (`float`, defaults to 1.0): b.

    Returns:
        `torch.Tensor`: the scaled initial latents, shaped like `noise`.
    """
    if prior_coefficient != 0.0 and prior is None:
        raise ValueError(f"`prior_coefficient` is {prior_coefficient} but no `prior` latent was given.")
    latents = noise_coefficient * noise
    if prior is not None and prior_coefficient != 0.0:
        if prior.ndim == noise.ndim - 1:
            prior = prior.unsqueeze(2)  # (B, C, h, w) -> (B, C, 1, h, w), repeated over frames below
        if prior.shape != noise.shape and prior.shape != noise.shape[:2] + (1,) + noise.shape[3:]:
            raise ValueError(
                f"`prior` must have the shape of the noise {tuple(noise.shape)} or lack its frame axis, "
                f"got {tuple(prior.shape)}."
            )
        latents = prior_coefficient * prior.to(noise.dtype).expand_as(noise) + latents
    return latents * initial_noise_scale(scheduler, convention)


def sdedit_start(
    z: torch.Tensor, noise: torch.Tensor, scheduler: SchedulerMixin, *, strength: float, convention: str = "ccedit"
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    SDEdit (Meng et al. 2022): noise clean latents part-way and keep only the tail of the schedule.

    How many of the n steps set on the scheduler are kept depends on the model's sampling convention
    (`sdedit_kept_steps`). The start is the forward process at the first kept evaluation
    (`Parameterisation.noised`):
    - sigma-space schedulers (Euler, Euler ancestral, DPM++(2S) ancestral): z + sigma_0 * noise, sigma_0 the first
      kept sigma, which is what the original's sampler starts from;
    - variance-preserving ones (DDIM, DPM-Solver, UniPC): `scheduler.add_noise(z, noise, t_0)`, their own forward
      process at the first kept timestep;
    - flow-matching ones: s_0 * noise + (1 - s_0) * z, what `FlowMatchEulerDiscreteScheduler.scale_noise` gives.
    The scheduler's begin index is set, so pass the returned timesteps to `denoise(..., timesteps=...)`.

    Args:
        z (`torch.Tensor`): clean latents, e.g. the VAE-encoded source video, `(batch, channels, frames, h, w)`.
        noise (`torch.Tensor`): N(0, I) of the same shape.
        scheduler (`SchedulerMixin`): a scheduler after `set_sampling_timesteps`.
        strength (`float`): in (0, 1]; 1 keeps every step.
        convention (`str`): the model's sampling convention (`ccedit.schedulers.SAMPLING_CONVENTIONS`).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the starting latents and the timesteps to run (empty when strength is
        too small to keep a step; the latents are then `z`).
    """
    if not 0.0 < strength <= 1.0:
        raise UserError(f"SDEdit `strength` must be in (0, 1], got {strength}")
    timesteps = sdedit_timesteps(scheduler, strength, convention)
    if len(timesteps) == 0:
        logger.warning("SDEdit strength %s keeps none of the %d steps; the latents stay as given.", strength,
                       scheduler.num_inference_steps)
        return z, timesteps
    begin_index = len(scheduler.timesteps) - len(timesteps)
    return parameterisation(scheduler).noised(scheduler, z, noise, timesteps[0], begin_index), timesteps


def sdedit_kept_steps(num_steps: int, strength: float, convention: str = "ccedit") -> int:
    """How many of `num_steps` sampler steps SDEdit at `strength` runs, by sampling convention.

    - "ccedit": max(int(strength * (n + 1)), 1) - 1, the original's count: it prunes the sigmas with the appended
      final sigma 0 among them (`Img2ImgDiscretizationWrapper`, ref §3);
    - "diffusers": min(int(n * strength), n), diffusers' image- and video-to-video pipelines (`get_timesteps`),
      so a model released for diffusers runs the steps it runs there (at 30 steps and strength 0.6: 18, not 17).
    """
    if convention == "ccedit":
        return max(int(strength * (num_steps + 1)), 1) - 1
    return min(int(num_steps * strength), num_steps)


def sdedit_timesteps(scheduler: SchedulerMixin, strength: float, convention: str = "ccedit") -> torch.Tensor:
    """The tail of the schedule that SDEdit at `strength` runs, with the scheduler's begin index set to its start.

    For a scheduler after `set_sampling_timesteps`; call it again after each `set_sampling_timesteps` (a second
    denoising pass over the same latents restarts the same tail).
    """
    num_steps = scheduler.num_inference_steps
    kept_steps = sdedit_kept_steps(num_steps, strength, convention)
    begin_index = (num_steps - kept_steps) * scheduler.order
    if kept_steps > 0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin_index)
    return scheduler.timesteps[begin_index:]
