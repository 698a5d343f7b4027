"""Sampling parity: ccedit's denoising loop with ccedit's network against a stored run of the original samplers.

The fixture holds the tiny network's state, the conditioning, the initial noise (and the ancestral draws), and the
latent after every step (ref §6). ccedit rebuilds the network from the state, drives `denoise` with the scheduler
that matches the original sampler, and compares every step's latent.
"""

from __future__ import annotations

import json

import torch

from ..convert.fixtures import Fixture, default_geometry_file
from ..convert.networks import load_trident
from ..errors import UserError
from ..models.centre import centre_frame
from ..pipelines.denoise import denoise, prepare_initial_latents
from ..schedulers import (
    build_scheduler,
    completes_step,
    evaluation_steps,
    set_sampling_timesteps,
)
from .parity import SAMPLING_ATOL, ParityResult, original_hint_remap

# The original sampler classes and the ccedit scheduler that reproduces each (ref §6.6).
SCHEDULER_FOR_SAMPLER = {"EulerEDMSampler": "euler", "DPMPP2SAncestralSampler": "dpmpp_2s_ancestral"}


def sampling_metadata(fixture: Fixture) -> dict:
    """The fixture's entry in `tiny_config.json`: sampler, steps, guidance scale, prior."""
    config = json.loads(default_geometry_file(fixture.path).read_text())
    for entry in config.get("sampling_fixtures", {}).get("files", {}).values():
        if entry.get("file") == fixture.path.name:
            return entry
    raise UserError(f"{fixture.path.name} is not described under sampling_fixtures in tiny_config.json")


def check_sampling_fixture(fixture: Fixture) -> ParityResult:
    t = fixture.tensors
    meta = sampling_metadata(fixture)
    if meta["sampler"] not in SCHEDULER_FOR_SAMPLER:
        raise UserError(f"no ccedit scheduler reproduces the sampler {meta['sampler']}")
    model = load_trident(fixture.state, fixture.geometry, prefix="", source=str(fixture.path))
    scheduler = build_scheduler(SCHEDULER_FOR_SAMPLER[meta["sampler"]])
    set_sampling_timesteps(scheduler, meta["steps"])

    # Without a prior, prepare_initial_latents' defaults give pure scaled noise.
    prior = meta.get("prior")
    prior_kwargs: dict[str, torch.Tensor | float] = {}
    if prior:
        prior_kwargs = {
            "prior": t["prior.ref_latent"],
            "prior_coefficient": prior["prior_coefficient_x"],
            "noise_coefficient": prior["prior_coefficient_noise"],
        }
    latents = prepare_initial_latents(t["noise.init"], scheduler, **prior_kwargs)

    # CFG batch [uncond; cond]: both halves share the structure maps and the reference latent (ref §6.1).
    context = torch.cat([t["uncond.crossattn"], t["cond.crossattn"]])
    maps = original_hint_remap(t["cond.control_hint"]).repeat(2, 1, 1, 1, 1)
    keyframe = t["cond.cond_feat"].repeat(2, 1, 1, 1) if model.appearance is not None else None
    frames = t["noise.init"].shape[2]
    timesteps_seen: list[torch.Tensor] = []

    def model_fn(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        timesteps_seen.append(torch.as_tensor(timestep))
        return model(x, torch.as_tensor(timestep).expand(x.shape[0]), context, structure_maps=[maps],
                     keyframe_latent=keyframe, keyframe_index=centre_frame(frames) if keyframe is not None else None)

    # Each evaluation belongs to a sampler step; Euler has one evaluation per step, DPM++(2S) two.
    steps = evaluation_steps(scheduler)
    # An ancestral sampler replays the original's noise draws, stored per step.
    step_kwargs_fn = (lambda index: {"noise": t[f"noise.{steps[index]}"]}) if "noise.0" in t else None
    details: dict[str, float] = {}

    def callback(index: int, timestep, x: torch.Tensor) -> None:
        # Only a finished step has a stored latent to compare with.
        if completes_step(steps, index):
            key = f"x.{steps[index]}"
            details[key] = (x - t[key]).abs().max().item()

    with torch.no_grad():
        final = denoise(model_fn, scheduler, latents, guidance_scale=meta["cfg"], callback=callback,
                        progress=False, step_kwargs_fn=step_kwargs_fn)
    details["final"] = (final - t["final"]).abs().max().item()
    expected_timesteps = t["eval.timesteps"][:, 0]
    timesteps_ok = len(timesteps_seen) == len(expected_timesteps) and all(
        int(a) == int(b) for a, b in zip(timesteps_seen, expected_timesteps)
    )
    worst = max(details.values())
    passed = timesteps_ok and len(details) == meta["steps"] + 1 and worst <= SAMPLING_ATOL
    return ParityResult(fixture.path.name, worst, passed, details)
