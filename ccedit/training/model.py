"""The networks a training run starts from: public frozen parts plus the learnable ones, initialised as CCEdit does."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import UserError
from ..models import AppearanceEncoder, CCEditTemporalAdapter, TridentModel, VideoUNet, adapter_config_for
from ..models.appearance import appearance_encoder_from_unet
from .config import ROLES, TrainModelConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@dataclass
class TrainingModels:
    """The trident being trained and the frozen encoders that feed it."""

    trident: TridentModel
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object


def check_roles(config: TrainModelConfig) -> list[str]:
    """The roles to train, checked against the model kind (before anything loads)."""
    roles = list(dict.fromkeys(config.trainable))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UserError(f"model.trainable must name some of {', '.join(ROLES)}, got {config.trainable}")
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
    """The trident (zero-initialised or given temporal layers; appearance copied from the UNet's encoder or given)."""
    if config.base == "tiny":
        from ..pipelines.tiny import tiny_components

        parts = tiny_components(keyframe=False)
        unet, controlnet = parts["unet"], parts["controlnet"]
        vae, text_encoder, tokenizer = parts["vae"], parts["text_encoder"], parts["tokenizer"]
        if config.controlnet is not None:
            controlnet = _load_controlnet(config.controlnet)
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        from ..hub import load_tokenizer

        unet = UNet2DConditionModel.from_pretrained(_component_folder(config.base, "unet"))
        vae = AutoencoderKL.from_pretrained(_component_folder(config.base, "vae"))
        text_encoder = CLIPTextModel.from_pretrained(_component_folder(config.base, "text_encoder"))
        tokenizer = load_tokenizer(config.base)
        if config.controlnet is None:
            raise UserError("model.controlnet is not set: give a structure ControlNet folder or hub id for this base")
        controlnet = _load_controlnet(config.controlnet)

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
    for frozen in (vae, text_encoder):
        frozen.requires_grad_(False).eval()
    return TrainingModels(TridentModel(main, [controlnet], appearance), vae, text_encoder, tokenizer)


def _load_controlnet(reference: str):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(_component_folder(reference, "controlnet"))
