"""What an edit will do and need, before anything is loaded: `ccedit edit --dry-run`.

The plan (passes, windows per pass, network calls) comes from the same pure planner the pipeline uses
(`pipelines.windows.plan_passes`), the networks' memory from `memory.estimate_edit_memory` under the edit's
settings (`estimate_network_memory`, which the memory guard uses too), and what the guard checks from
`resources.edit_memory_need`; nothing reads a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import EditConfig, hierarchical_setting, structure_controlnets, window_length
from .memory import MemoryEstimate, estimate_edit_memory
from .pipelines.conditions import keyframes_act
from .pipelines.windows import plan_passes
from .resources import MemoryNeed, edit_memory_need
from .schedulers import build_scheduler, set_sampling_timesteps


@dataclass
class EditPlan:
    num_frames: int
    height: int
    width: int
    windows_per_pass: list[int]
    evaluations: int  # network evaluations per window and pass (scheduler steps x calls per step)
    memory: MemoryEstimate
    memory_need: MemoryNeed  # what the memory guard checks, where it lives

    @property
    def model_calls(self) -> int:
        """Trident calls of the edit; both guidance halves go in one batched call."""
        return self.evaluations * sum(self.windows_per_pass)

    def lines(self) -> list[str]:
        return [
            f"clip: {self.num_frames} frames at {self.width}x{self.height}",
            f"passes: {len(self.windows_per_pass)} (windows per pass: {', '.join(map(str, self.windows_per_pass))})",
            f"network calls: {self.model_calls} ({self.evaluations} evaluations x "
            f"{sum(self.windows_per_pass)} windows)",
            *self.memory.lines(),
            f"memory guard: {self.memory_need.host_bytes / 2**30:.2f} GiB of the computer's memory"
            + (f", {self.memory_need.device_bytes / 2**30:.2f} GiB of the accelerator's" if self.memory_need.device
               else ""),
        ]


def acting_keyframes(cfg: EditConfig, keyframes: Sequence) -> list:
    """The keyframes that act on the edit: none at `sampling.appearance_scale=0`, where they get no windows of
    their own and no appearance branch."""
    return list(keyframes) if keyframes_act(len(keyframes), cfg.sampling.appearance_scale) else []


def estimate_network_memory(
    cfg: EditConfig, *, num_frames: int, height: int, width: int, keyframes: Sequence, device: torch.device
) -> MemoryEstimate:
    """The memory model's estimate of an edit under `cfg` on `device`: the dtype, geometry, offload and VAE slicing
    the edit will load with; `keyframes` (indices or `KeyframeSpec`s) only count when they act."""
    from .pipelines.loading import offloads, resolve_dtype
    from .kinds import model_skeleton

    controlnets = structure_controlnets(cfg)
    networks = model_skeleton(cfg.model.path, controlnets, cfg.model.parts)
    estimate = estimate_edit_memory(
        height=height, width=width, num_frames=num_frames, window_length=window_length(cfg),
        dtype=resolve_dtype(cfg.model.dtype, device), guidance=cfg.sampling.guidance_scale > 1,
        keyframe=bool(acting_keyframes(cfg, keyframes)), num_controlnets=len(controlnets),
        cpu_offload=offloads(cfg.model.cpu_offload, device), vae_slicing=cfg.model.vae_slicing,
        networks=networks, device_type=device.type,
    )
    if networks is None:  # a hub id not in the local cache: nothing is fetched for an estimate
        estimate.notes.append(f"the configs of model {cfg.model.path} are not on this computer: estimated for "
                              "CCEdit's released size (SD-1.5)")
    return estimate


def plan_edit(cfg: EditConfig, num_frames: int, height: int, width: int, keyframe_frames: list[int],
              source_size: tuple[int, int]) -> EditPlan:
    """The plan and memory estimate of an edit of `num_frames` frames at `height` x `width` (read from a clip of
    `source_size`) under `cfg`."""
    from .pipelines.loading import resolve_device

    s = cfg.sampling
    keyframe_frames = acting_keyframes(cfg, keyframe_frames)
    passes = plan_passes(num_frames, window_length(cfg), cfg.windows.overlap, keyframe_frames,
                         hierarchical_setting(cfg))
    scheduler = build_scheduler(s.scheduler)
    set_sampling_timesteps(scheduler, s.num_inference_steps, "cpu")
    evaluations = len(scheduler.timesteps)
    if s.strength < 1:
        from .pipelines.denoise import sdedit_timesteps

        evaluations = len(sdedit_timesteps(scheduler, s.strength))
    memory = estimate_network_memory(cfg, num_frames=num_frames, height=height, width=width,
                                     keyframes=keyframe_frames, device=resolve_device(cfg.model.device))
    need = edit_memory_need(memory, num_frames=num_frames, size=(height, width), source_size=source_size,
                            num_maps=len(cfg.structure.annotators))
    return EditPlan(num_frames, height, width, [len(w) for _, w in passes], evaluations, memory, need)


def dry_run(input_path: str | Path, cfg: EditConfig, keyframes: list) -> list[str]:
    """`ccedit edit --dry-run`: the frames are read and fitted (to know their number and size); no model loads."""
    from .edit_checks import check_keyframe_specs
    from .preparation import load_keyframe, prepare_clip, resolve_keyframe_indices
    from .keyframe_match import ClipStructure, place_matched_keyframes

    check_keyframe_specs(keyframes)
    prepared = prepare_clip(input_path, cfg)
    num_frames = prepared.frames.shape[0]
    if any(spec.match for spec in keyframes):  # IMAGE@match: the frame is found as the edit would find it
        images = [load_keyframe(spec.source, prepared.size, cfg.video.resize_mode) if spec.match else None
                  for spec in keyframes]
        keyframes = place_matched_keyframes(keyframes, images, ClipStructure(prepared.frames))
    indices = resolve_keyframe_indices(keyframes, num_frames)
    return plan_edit(cfg, num_frames, *prepared.size, indices, prepared.clip.source_size).lines()
