"""The model an edit runs: checked before any frame is decoded (it exists; the annotators have their ControlNets)
and loaded with the edit's settings (offload, VAE slicing, convolution layout, compilation)."""

from __future__ import annotations

import logging

import torch

from .config import EditConfig, structure_controlnets
from .errors import UserError

logger = logging.getLogger(__name__)


def check_model_reference(cfg: EditConfig) -> None:
    """A model folder or hub id that cannot be found fails here, in one line, before any frame is decoded."""
    from .kinds import ModelRef, kind_for

    kind_for(cfg.model.path).check(ModelRef.of(cfg.model))


def model_conventions(cfg: EditConfig):
    """The conventions of the edit's model kind (`kinds.Conventions`)."""
    from .kinds import kind_for

    return kind_for(cfg.model.path).conventions


def checked_structure_controlnets(cfg: EditConfig) -> list[str | None]:
    """One ControlNet per annotator (None: the model's own), refused at once when the model's kind cannot take them
    (`ModelKind.check_structure`)."""
    from .kinds import kind_for

    nets = structure_controlnets(cfg)
    kind_for(cfg.model.path).check_structure(nets)
    return nets


def load_edit_pipeline(cfg: EditConfig, device: torch.device):
    """The edit's `CCEditPipeline`, loaded with its settings; a built-in tiny model is named aloud as noise."""
    from .kinds import kind_for, load_pipeline
    from .pipelines.loading import offloads

    kind = kind_for(cfg.model.path)
    if kind.builtin:
        logger.warning("using a built-in tiny model: its weights are random, so the edit is noise-like; "
                       "set %s for real edits", kind.real_model)
    pipe = load_pipeline(cfg.model.path, controlnets=checked_structure_controlnets(cfg), tokenizer=cfg.model.tokenizer,
                         scheduler=cfg.sampling.scheduler, dtype=cfg.model.dtype, device=cfg.model.device,
                         base=cfg.model.base, loras=cfg.model.lora, fuse_lora=cfg.model.fuse_lora,
                         parts=cfg.model.parts, shift=cfg.sampling.shift)
    if offloads(cfg.model.cpu_offload, device):
        pipe.enable_model_cpu_offload(device=device)
    if cfg.model.vae_slicing:
        pipe.enable_vae_slicing()
    if cfg.model.cpu_tuning:
        pipe.enable_cpu_tuning()
    if cfg.model.channels_last:
        pipe.enable_channels_last()
    if cfg.model.compile:
        pipe.compile_networks()
    return pipe
