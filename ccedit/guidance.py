"""What an edit's settings make of its prompt and its structure strength: the text the pipeline is given and each
ControlNet's scale. Every sampling call of an edit (the video and any keyframe edited from the prompt, in `ccedit
edit` and in the studio alike) asks here, so they are guided the same way."""

from __future__ import annotations

from .config import EditConfig


def sampled_prompt(cfg: EditConfig, prompt: str) -> str:
    """The prompt as sampled: `sampling.add_prompt` before it (when set), `"<add_prompt>, <prompt>"`; removing a
    region (`mask.remove`) paints it with `mask.background_prompt` instead."""
    if cfg.mask.remove:
        prompt = cfg.mask.background_prompt
    add = cfg.sampling.add_prompt
    return f"{add}, {prompt}" if add else prompt


def structure_scales(cfg: EditConfig) -> list[float]:
    """One strength per ControlNet: `structure.scales`, a single entry applying to every annotator."""
    scales, names = cfg.structure.scales, cfg.structure.annotators
    return list(scales) * len(names) if len(scales) == 1 else list(scales)
