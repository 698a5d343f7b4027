"""The networks a training run starts from: public frozen parts plus the learnable ones (CCEdit's trident, initialised
as CCEdit does, or the open trident: AnimateDiff's motion modules and SparseCtrl, tiny or from real parts)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import MotionAdapter
from safetensors.torch import load_file

from ..errors import UserError, first_line
from ..hub import cached_model_folder, names_local_folder
from ..kinds import kind_for
from ..models import (
    AppearanceEncoder,
    CCEditTemporalAdapter,
    TridentModel,
    VideoUNet,
    adapter_config_for,
    build_trident,
)
from ..models.appearance import appearance_encoder_from_unet
from ..models.motion import MotionMainBranch
from ..schedulers import build_scheduler
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


# The tiny open trident (AnimateDiff motion modules as the main branch, SparseCtrl as the appearance branch) and the
# tiny CCEdit trident: bases built in, each with its own structure ControlNet. Any other base is an SD-1.5 folder or
# hub id, which is the open trident when `model.temporal` holds AnimateDiff's motion modules and CCEdit's otherwise.
OPEN_TRIDENT_TINY = "animatediff-tiny"
CCEDIT_TINY = "tiny"

# How each trident samples its sample videos (the scheduler, the sampling convention), as editing samples it.
# The model kind whose sampler (scheduler, sampling convention) a main branch's sample videos use.
SAMPLED_AS = {VideoUNet: CCEDIT_TINY, MotionMainBranch: OPEN_TRIDENT_TINY}


def _open_trident_setting(config: TrainModelConfig) -> str | None:
    """The setting that makes these settings the open trident (`model.base=...` or `model.temporal=...`), or None
    for CCEdit's trident; read from the temporal layers' config, with nothing loaded."""
    if config.base == OPEN_TRIDENT_TINY:
        return f"model.base={config.base}"
    if config.temporal is not None and _temporal_class_name(config.temporal) == MotionAdapter.__name__:
        return f"model.temporal={config.temporal} (a {MotionAdapter.__name__})"
    return None


def main_branch_class(config: TrainModelConfig) -> type:
    """The class of the main branch these settings train (its `roles` are the main branch's learnable roles)."""
    return MotionMainBranch if _open_trident_setting(config) else VideoUNet


def check_roles(config: TrainModelConfig) -> list[str]:
    """The roles to train, checked against the model kind (before anything loads)."""
    roles = list(dict.fromkeys(config.trainable))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UserError(f"model.trainable must name some of {', '.join(ROLES)}, got {config.trainable}")
    available = (*main_branch_class(config).roles, "appearance")
    lacking = [r for r in roles if r not in available]
    if lacking:
        model = _open_trident_setting(config) or f"model.base={config.base}"
        raise UserError(f"model.trainable has {lacking[0]}, which {model} has no layers for: "
                        f"choose from {', '.join(available)}")
    needs_keyframe = [r for r in roles if r != "temporal"]
    if needs_keyframe and not config.keyframe:
        raise UserError(f"model.trainable has {needs_keyframe[0]}, which only the keyframe model has: set model.keyframe=true")
    return roles


def check_structure(config: TrainModelConfig) -> None:
    """A base of a folder or hub id needs `model.controlnet` (the built-in tiny ones have their own)."""
    if config.controlnet is None and config.base not in (CCEDIT_TINY, OPEN_TRIDENT_TINY):
        raise UserError("model.controlnet is not set: give a structure ControlNet folder or hub id for this base")


def _temporal_class_name(reference: str) -> str | None:
    """The `_class_name` in the config of the temporal layers `reference` names (a folder, a model folder holding
    `temporal/`, or a cached hub id), read without loading them or going online; None where there is no config
    (`load_temporal` then says what the folder lacks)."""
    folder = cached_model_folder(reference)
    if folder is None and names_local_folder(reference):
        raise UserError(f"model.temporal folder {reference} does not exist: give the folder of trained temporal "
                        "layers (a run's model/, or a MotionAdapter folder)")
    if folder is None:
        raise UserError(f"model.temporal {reference} is not a hub id in the local cache: download it first "
                        f"(hf download {reference}) or give its folder")
    try:
        return json.loads((_inside(folder, "temporal") / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):  # no config, or not a JSON object
        return None


def _inside(folder: Path, subfolder: str) -> Path:
    """`folder/subfolder` when a model folder holds it, else `folder` itself (a component folder)."""
    return folder / subfolder if (folder / subfolder).is_dir() else folder


def _component_folder(reference: str, subfolder: str) -> Path:
    """The local folder of `reference`'s component `subfolder` (see `_inside`), a hub id downloaded once."""
    from ..pipelines.model_folders import how_to_make, resolve_model_folder

    return _inside(resolve_model_folder(reference, what=subfolder, hint=how_to_make(reference)), subfolder)


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
    check_structure(config)
    main_class = main_branch_class(config)
    parts = _base_parts(config.base, config.keyframe)
    controlnet = parts["controlnet"] if config.controlnet is None else _load_controlnet(config.controlnet)
    build = _open_trident if main_class is MotionMainBranch else _ccedit_trident
    trident = build(config, parts, controlnet)
    for frozen in (parts["vae"], parts["text_encoder"]):
        frozen.requires_grad_(False).eval()
    conventions = kind_for(SAMPLED_AS[main_class]).conventions
    scheduler, convention = conventions.scheduler, conventions.sampling_convention
    return TrainingModels(trident, parts["vae"], parts["text_encoder"], parts["tokenizer"],
                          build_scheduler(scheduler), convention)


def _base_parts(base: str, keyframe: bool) -> dict:
    """The image UNet, VAE, text encoder and tokenizer of a built-in tiny base (with its ControlNet, motion modules
    and appearance branch) or of an SD-1.5 folder or hub id."""
    if base == CCEDIT_TINY:
        from ..pipelines.tiny import tiny_components

        return tiny_components(keyframe=False)
    if base == OPEN_TRIDENT_TINY:
        from ..pipelines.tiny import tiny_animatediff_components

        return tiny_animatediff_components(appearance=keyframe)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..hub import load_tokenizer

    return dict(unet=UNet2DConditionModel.from_pretrained(_component_folder(base, "unet")),
                vae=AutoencoderKL.from_pretrained(_component_folder(base, "vae")),
                text_encoder=CLIPTextModel.from_pretrained(_component_folder(base, "text_encoder")),
                tokenizer=load_tokenizer(base))


def _ccedit_trident(config: TrainModelConfig, parts: dict, controlnet) -> TridentModel:
    """CCEdit's trident: zero-initialised or given temporal layers; appearance copied from the UNet's encoder or
    given."""
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
    return TridentModel(main, [controlnet], appearance)


def _open_trident(config: TrainModelConfig, parts: dict, controlnet) -> TridentModel:
    """The open trident: the given `MotionAdapter` (else the tiny one's motion modules) and, for the keyframe model,
    the given `SparseControlNetModel` (else the tiny one's SparseCtrl-RGB, else a new one from the UNet), trained as
    they are (no zero initialisation: AnimateDiff's and SparseCtrl's released networks are fine-tuned)."""
    from diffusers import SparseControlNetModel

    adapter = parts.get("temporal")
    if config.temporal is not None:
        adapter = MotionAdapter.from_pretrained(_component_folder(config.temporal, "temporal"))
    appearance = None
    if config.keyframe:
        if config.appearance is not None:
            appearance = SparseControlNetModel.from_pretrained(_component_folder(config.appearance, "appearance"))
        else:
            appearance = parts.get("appearance")
            if appearance is None:
                appearance = _sparse_control_from_unet(parts["unet"])
    try:
        return build_trident(parts["unet"], adapter, [controlnet], appearance)
    except (RuntimeError, ValueError) as error:  # diffusers refuses motion modules of another shape
        raise UserError(f"model.temporal {config.temporal} does not fit the base UNet: {first_line(error, limit=200)}")


def _sparse_control_from_unet(unet):
    """A new SparseCtrl-RGB (keyframe latents in) initialised from `unet`'s encoder by diffusers' `from_unet`.

    `from_unet` rewrites the block types of the UNet config it reads in place (and cannot on a tuple), so it reads
    a copy of the config beside the UNet's own modules.
    """
    from types import SimpleNamespace

    from diffusers import SparseControlNetModel
    from diffusers.configuration_utils import FrozenDict

    config = FrozenDict({**unet.config, "down_block_types": list(unet.config.down_block_types)})
    modules = ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block")
    view = SimpleNamespace(config=config, **{name: getattr(unet, name) for name in modules})
    return SparseControlNetModel.from_unet(view, conditioning_channels=unet.config.in_channels)


def _load_controlnet(reference: str):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(_component_folder(reference, "controlnet"))
