"""What an edit will do and need, before anything is loaded: `ccedit edit --dry-run`.

The plan (passes, windows per pass, network calls) comes from the same pure planner the pipeline uses
(`pipelines.windows.plan_passes`), the memory from `memory.estimate_edit_memory`; neither reads a weight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import EditConfig, hierarchical_setting, window_length
from .memory import MemoryEstimate, estimate_edit_memory
from .pipelines.windows import plan_passes
from .schedulers import build_scheduler, set_sampling_timesteps

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class EditPlan:
    num_frames: int
    height: int
    width: int
    windows_per_pass: list[int]
    evaluations: int  # network evaluations per window and pass (scheduler steps x calls per step)
    memory: MemoryEstimate

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
        ]


def model_geometry(model: str) -> str:
    """The named geometry (`ccedit.pipelines.tiny.GEOMETRIES`) of a model, from its configs alone."""
    from .pipelines.tiny import GEOMETRIES

    if model == "tiny":
        return "tiny"
    config = Path(model).expanduser() / "unet" / "config.json"
    channels = json.loads(config.read_text()).get("block_out_channels") if config.is_file() else None
    for name, geometry in GEOMETRIES.items():
        if channels == geometry.block_out_channels:
            return name
    return "sd15"  # a hub id or an unreadable folder: the released size


def plan_edit(cfg: EditConfig, num_frames: int, height: int, width: int, keyframe_frames: list[int]) -> EditPlan:
    """The plan and memory estimate of an edit of `num_frames` frames at `height` x `width` under `cfg`."""
    s = cfg.sampling
    if s.appearance_scale == 0:  # keyframes that do not act get no windows of their own and no appearance branch
        keyframe_frames = []
    passes = plan_passes(num_frames, window_length(cfg), cfg.windows.overlap, keyframe_frames,
                         hierarchical_setting(cfg))
    scheduler = build_scheduler(s.scheduler)
    set_sampling_timesteps(scheduler, s.num_inference_steps, "cpu")
    evaluations = len(scheduler.timesteps)
    if s.strength < 1:
        from .pipelines.denoise import sdedit_timesteps

        evaluations = len(sdedit_timesteps(scheduler, s.strength))
    device = cfg.model.device if cfg.model.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES.get(cfg.model.dtype, torch.float16 if device.startswith("cuda") else torch.float32)
    memory = estimate_edit_memory(
        height=height, width=width, num_frames=num_frames, window_length=window_length(cfg),
        dtype=dtype, guidance=s.guidance_scale > 1, keyframe=bool(keyframe_frames),
        num_controlnets=len(cfg.structure.annotators), cpu_offload=cfg.model.cpu_offload,
        geometry=model_geometry(cfg.model.path), device_type=torch.device(device).type,
    )
    return EditPlan(num_frames, height, width, [len(w) for _, w in passes], evaluations, memory)


def dry_run(input_path: str | Path, cfg: EditConfig, keyframes: list) -> list[str]:
    """`ccedit edit --dry-run`: the frames are read and fitted (to know their number and size); no model loads."""
    from .editing import check_keyframe_specs, prepare_clip, resolve_keyframe_indices

    check_keyframe_specs(keyframes)
    prepared = prepare_clip(input_path, cfg)
    num_frames = prepared.frames.shape[0]
    indices = resolve_keyframe_indices(keyframes, num_frames)
    return plan_edit(cfg, num_frames, *prepared.size, indices).lines()
