"""The networks a training run starts from: public frozen parts plus the learnable ones (CCEdit's trident, initialised
as CCEdit does, or the tiny open trident)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import UserError, first_line
from ..models import (AppearanceEncoder, CCEditTemporalAdapter, TridentModel, VideoUNet, adapter_config_for,
                      build_trident)
from ..models.appearance import appearance_encoder_from_unet
from ..models.motion import MotionMainBranch
from .config import ROLES, TrainModelConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@dataclass
class TrainingModels:
    """The trident being trained, the frozen encoders that feed it and how the model samples (for sample videos)."""

    trident: TridentModel
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # a diffusers scheduler: the model's own sampler
    sampling_convention: str = "ccedit"


# The tiny open trident (AnimateDiff motion modules as the main branch, SparseCtrl as the appearance branch); every
# other base is CCEdit's trident on an SD-1.5 UNet.
OPEN_TRIDENT_TINY = "animatediff-tiny"


def main_branch_class(config: TrainModelConfig) -> type:
    """The class of the main branch these settings train (its `roles` are the main branch's learnable roles)."""
    return MotionMainBranch if config.base == OPEN_TRIDENT_TINY else VideoUNet


def check_roles(config: TrainModelConfig) -> list[str]:
    """The roles to train, checked against the model kind (before anything loads)."""
    roles = list(dict.fromkeys(config.trainable))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UserError(f"model.trainable must name some of {', '.join(ROLES)}, got {config.trainable}")
    available = (*main_branch_class(config).roles, "appearance")
    lacking = [r for r in roles if r not in available]
    if lacking:
        raise UserError(f"model.trainable has {lacking[0]}, which model.base={config.base} has no layers for: "
                        f"choose from {', '.join(available)}")
    needs_keyframe = [r for r in roles if r != "temporal"]
    if needs_keyframe and not config.keyframe:
        raise UserError(f"model.trainable has {needs_keyframe[0]}, which only the keyframe model has: set model.keyframe=true")
    return roles


def _component_folder(reference: str, subfolder: str) -> Path:
    """`reference/subfolder` when a model folder holds it, else `reference` itself (a component folder)."""
    from ..pipelines.model_folders import how_to_make, resolve_model_folder

    folder = resolve_model_folder(reference, what=subfolder, hint=how_to_make(reference))
    return folder / subfolder if (folder / subfolder).is_dir() else folder


def load_temporal(reference: str, unet, cross_frame: bool) -> CCEditTemporalAdapter:
    """Trained temporal layers for `unet`; a text-to-video adapter gains zero-initialised cross-frame attention.

    This is how the keyframe model starts from trained temporal layers: every tensor must load except, when the
    source has none, the cross-frame layers.
    """
    folder = _component_folder(reference, "temporal")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"model.temporal: {folder} holds no {WEIGHTS_NAME}")
    temporal = CCEditTemporalAdapter(**adapter_config_for(unet, cross_frame)).zero_init()
    state = load_file(weights)
    target = temporal.state_dict()
    unexpected = [k for k in state if k not in target or target[k].shape != state[k].shape]
    missing = [k for k in target if k not in state and ".cross_frame." not in k]
    if unexpected or missing:
        raise UserError(f"model.temporal {folder} does not fit the base UNet: e.g. {(unexpected or missing)[:3]}")
    temporal.load_state_dict({**target, **state})
    return temporal


def build_models(config: TrainModelConfig) -> TrainingModels:
    """The trident: the frozen public parts, the main branch's temporal layers (new or given) and, for the keyframe
    model, the appearance branch (new or given); the VAE and text encoder frozen."""
    if config.base == OPEN_TRIDENT_TINY:
        models = _open_trident(config)
    else:
        models = _ccedit_trident(config)
    for frozen in (models.vae, models.text_encoder):
        frozen.requires_grad_(False).eval()
    return models


def _ccedit_trident(config: TrainModelConfig) -> TrainingModels:
    """CCEdit's trident: zero-initialised or given temporal layers; appearance copied from the UNet's encoder or
    given."""
    from ..schedulers import build_scheduler

    if config.base == "tiny":
        from ..pipelines.tiny import tiny_components

        parts = tiny_components(keyframe=False)
        controlnet = parts["controlnet"] if config.controlnet is None else _load_controlnet(config.controlnet)
    else:
        parts = _base_parts(config.base)
        if config.controlnet is None:
            raise UserError("model.controlnet is not set: give a structure ControlNet folder or hub id for this base")
        controlnet = _load_controlnet(config.controlnet)
    unet = parts["unet"]
    if config.temporal is not None:
        main = VideoUNet(unet, load_temporal(config.temporal, unet, config.keyframe))
    else:
        main = VideoUNet.from_unet2d(unet, cross_frame_attention=config.keyframe)
    appearance = None
    if config.keyframe:
        if config.appearance is not None:
            appearance = AppearanceEncoder.from_pretrained(_component_folder(config.appearance, "appearance"))
        else:
            appearance = appearance_encoder_from_unet(unet)
    return TrainingModels(TridentModel(main, [controlnet], appearance), parts["vae"], parts["text_encoder"],
                          parts["tokenizer"], build_scheduler("dpmpp_2s_ancestral"))


def _base_parts(base: str) -> dict:
    """The image UNet, VAE, text encoder and tokenizer of an SD-1.5 folder or hub id."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..hub import load_tokenizer

    return dict(unet=UNet2DConditionModel.from_pretrained(_component_folder(base, "unet")),
                vae=AutoencoderKL.from_pretrained(_component_folder(base, "vae")),
                text_encoder=CLIPTextModel.from_pretrained(_component_folder(base, "text_encoder")),
                tokenizer=load_tokenizer(base))


def _open_trident(config: TrainModelConfig) -> TrainingModels:
    """The tiny open trident: its motion modules (or a given `MotionAdapter`) and, for the keyframe model, its
    SparseCtrl-RGB (or a given `SparseControlNetModel`), trained as they are (no zero initialisation: AnimateDiff's
    and SparseCtrl's released networks are fine-tuned)."""
    from diffusers import MotionAdapter, SparseControlNetModel

    from ..pipelines.tiny import tiny_animatediff_components

    parts = tiny_animatediff_components(appearance=config.keyframe)
    controlnet = parts["controlnet"] if config.controlnet is None else _load_controlnet(config.controlnet)
    adapter = parts["temporal"]
    if config.temporal is not None:
        adapter = MotionAdapter.from_pretrained(_component_folder(config.temporal, "temporal"))
    appearance = parts["appearance"]
    if config.keyframe and config.appearance is not None:
        appearance = SparseControlNetModel.from_pretrained(_component_folder(config.appearance, "appearance"))
    try:
        trident = build_trident(parts["unet"], adapter, [controlnet], appearance)
    except (RuntimeError, ValueError) as error:  # diffusers refuses motion modules of another shape
        raise UserError(f"model.temporal {config.temporal} does not fit the base UNet: {first_line(error, limit=200)}")
    return TrainingModels(trident, parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["scheduler"],
                          parts["sampling_convention"])


def _load_controlnet(reference: str):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(_component_folder(reference, "controlnet"))
