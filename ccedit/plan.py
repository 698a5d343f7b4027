"""What an edit will do and need, before anything is loaded: `ccedit edit --dry-run`.

The plan (passes, windows per pass, network calls) comes from the same pure planner the pipeline uses
(`pipelines.windows.plan_passes`), the memory from the function the memory guard checks
(`memory_guard.edit_memory_need`: the memory model under the edit's settings, and the host side); nothing reads a
weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import EditConfig, hierarchical_setting, window_length
from .memory import MemoryEstimate
from .memory_guard import MemoryNeed, acting_keyframes, edit_memory_need
from .pipelines.time_grid import TimeGrid
from .schedulers import build_scheduler, set_sampling_timesteps


@dataclass
class EditPlan:
    num_frames: int
    height: int
    width: int
    windows_per_pass: list[int]
    evaluations: int  # network evaluations per window and pass (scheduler steps x calls per step)
    memory_need: MemoryNeed  # what the memory guard checks, where it lives
    latent_time_factor: int = 1  # frames per latent frame of the model's VAE (its kind's convention)

    @property
    def memory(self) -> MemoryEstimate:
        """The memory model's estimate of the networks."""
        return self.memory_need.network

    @property
    def model_calls(self) -> int:
        """Trident calls of the edit; both guidance halves go in one batched call."""
        return self.evaluations * sum(self.windows_per_pass)

    def _fitted(self) -> str:
        """How the clip is fitted to a VAE that compresses time, which takes `factor * k + 1` frames."""
        fitted = TimeGrid(self.latent_time_factor).fitted(self.num_frames)
        if fitted == self.num_frames:
            return ""
        return (f" (denoised as {fitted} frames, the {self.latent_time_factor}k+1 the model takes: the last frame "
                "repeated, then cut back)")

    def lines(self) -> list[str]:
        return [
            f"clip: {self.num_frames} frames at {self.width}x{self.height}" + self._fitted(),
            f"passes: {len(self.windows_per_pass)} (windows per pass: {', '.join(map(str, self.windows_per_pass))})",
            f"network calls: {self.model_calls} ({self.evaluations} evaluations x "
            f"{sum(self.windows_per_pass)} windows)",
            *self.memory.lines(),
            f"memory guard: {self.memory_need.host_bytes / 2**30:.2f} GiB of the computer's memory"
            + (f", {self.memory_need.device_bytes / 2**30:.2f} GiB of the accelerator's" if self.memory_need.device
               else ""),
        ]


def plan_edit(cfg: EditConfig, num_frames: int, height: int, width: int, keyframe_frames: list[int],
              source_size: tuple[int, int]) -> EditPlan:
    """The plan and memory estimate of an edit of `num_frames` frames at `height` x `width` (read from a clip of
    `source_size`) under `cfg`."""
    from .kinds import kind_for

    s, conventions = cfg.sampling, kind_for(cfg.model.path).conventions  # how the model's kind windows and samples
    keyframe_frames = acting_keyframes(cfg, keyframe_frames)
    grid = TimeGrid(conventions.latent_time_factor)
    passes = grid.passes(num_frames, window_length(cfg), cfg.windows.overlap, keyframe_frames,
                         hierarchical_setting(cfg), centre_keyframes=conventions.centred_keyframes)
    scheduler = build_scheduler(s.scheduler)
    set_sampling_timesteps(scheduler, s.num_inference_steps, "cpu", conventions.sampling_convention)
    evaluations = len(scheduler.timesteps)
    if s.strength < 1:
        from .pipelines.denoise import sdedit_timesteps

        evaluations = len(sdedit_timesteps(scheduler, s.strength, conventions.sampling_convention))
    need = edit_memory_need(cfg, num_frames=num_frames, size=(height, width), source_size=source_size,
                            keyframes=keyframe_frames)
    return EditPlan(num_frames, height, width, [len(w) for _, w in passes], evaluations, need,
                    latent_time_factor=grid.factor)


def dry_run(input_path: str | Path, cfg: EditConfig, keyframes: list) -> list[str]:
    """`ccedit edit --dry-run`: the frames are read and fitted (to know their number and size); no model loads."""
    from .edit_checks import check_keyframe_specs, check_reference_setting
    from .preparation import load_keyframe, prepare_clip, resolve_keyframe_indices
    from .keyframe_match import ClipStructure, place_matched_keyframes

    check_keyframe_specs(keyframes)
    check_reference_setting(cfg)
    prepared = prepare_clip(input_path, cfg)
    num_frames = prepared.frames.shape[0]
    if any(spec.match for spec in keyframes):  # IMAGE@match: the frame is found as the edit would find it
        images = [load_keyframe(spec.source, prepared.size, cfg.video.resize_mode) if spec.match else None
                  for spec in keyframes]
        keyframes = place_matched_keyframes(keyframes, images, ClipStructure(prepared.frames))
    indices = resolve_keyframe_indices(keyframes, num_frames)
    return plan_edit(cfg, num_frames, *prepared.size, indices, prepared.clip.source_size).lines()
