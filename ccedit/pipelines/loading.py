"""Load a `CCEditPipeline` from the built-in tiny model, a converted model folder or a hub id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, SparseControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel

from ..config_checks import DTYPE_NAMES
from ..errors import ModelNotFoundError
from ..models import AppearanceEncoder, CCEditTemporalAdapter
from ..schedulers import build_scheduler
from ..hub import load_tokenizer
from .model_folders import (  # noqa: F401 - the loaders' public names
    HOW_TO_GET,
    REQUIRED_SUBFOLDERS,
    check_model_folder,
    how_to_make,
    load_component,
    resolve_model_folder,
)
from .pipeline_ccedit import CCEditPipeline

logger = logging.getLogger(__name__)

DEPTH_SUBFOLDER = "depth_estimator"
# The class of each network of a model folder, by subfolder (`_load_model` loads them, `skeleton` builds them
# from their configs alone).
MODEL_NETWORKS = {
    "unet": UNet2DConditionModel, "temporal": CCEditTemporalAdapter, "controlnet": ControlNetModel,
    "vae": AutoencoderKL, "text_encoder": CLIPTextModel, "appearance": AppearanceEncoder,
}


DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}  # besides "auto"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelNotFoundError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return DTYPES[dtype]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def offloads(cpu_offload: bool, device: torch.device) -> bool:
    """Whether `model.cpu_offload` takes effect: model offload needs a CUDA device (elsewhere it is ignored)."""
    return cpu_offload and device.type == "cuda"


# The parts of the open trident (`model.path=animatediff`), each a local folder or a hub id.
OPEN_TRIDENT_PARTS = {
    "base": "an SD-1.5 model in diffusers format (unet/, vae/, text_encoder/, tokenizer/)",
    "motion_adapter": "AnimateDiff motion modules (diffusers MotionAdapter)",
    "controlnet": "the structure ControlNet (SD-1.5)",
    "sparsectrl": "SparseCtrl-RGB, the appearance branch (optional: null for text-guided edits only)",
}
# The open trident's networks: class, the part that holds it and the subfolder there.
OPEN_TRIDENT_NETWORKS = {
    "unet": (UNet2DConditionModel, "base", "unet"), "vae": (AutoencoderKL, "base", "vae"),
    "text_encoder": (CLIPTextModel, "base", "text_encoder"), "temporal": (MotionAdapter, "motion_adapter", None),
    "controlnet": (ControlNetModel, "controlnet", None), "appearance": (SparseControlNetModel, "sparsectrl", None),
}


_PART_NAMES = {"base": "base model", "motion_adapter": "motion adapter", "controlnet": "ControlNet",
               "sparsectrl": "SparseCtrl"}


def open_trident_folders(parts: dict) -> dict[str, Path]:
    """The local folder of each configured part of the open trident (`model.path=animatediff`), each missing one
    refused in one line that names its setting (`model.parts.base=DIR`)."""
    unknown = set(parts) - set(OPEN_TRIDENT_PARTS)
    missing = [p for p in ("base", "motion_adapter", "controlnet") if not parts.get(p)]
    if unknown or missing:
        raise ModelNotFoundError(
            f"model.parts {'lacks ' + ', '.join(missing) if missing else 'has unknown ' + ', '.join(sorted(unknown))}: "
            + "; ".join(f"{k}: {v}" for k, v in OPEN_TRIDENT_PARTS.items())
        )
    return {part: resolve_model_folder(str(parts[part]), _PART_NAMES[part], f"model.parts.{part}=DIR")
            for part in OPEN_TRIDENT_PARTS if parts.get(part)}


def load_open_trident(parts: dict, controlnets: Sequence[str | None], scheduler: str, dtype: torch.dtype) -> CCEditPipeline:
    """The open trident from its parts: an SD-1.5 base, AnimateDiff motion modules, ControlNets, SparseCtrl-RGB."""
    cls = {name: entry[0] for name, entry in OPEN_TRIDENT_NETWORKS.items()}
    folders = open_trident_folders(parts)
    base, adapter_path, own_net = (str(folders[p]) for p in ("base", "motion_adapter", "controlnet"))
    kwargs = dict(torch_dtype=dtype)
    nets = [
        load_component(cls["controlnet"], own_net if c is None else str(
            resolve_model_folder(c, "ControlNet", "structure.controlnets=[..., DIR]")), None, "ControlNet", **kwargs)
        for c in controlnets
    ]
    sparse = None
    if "sparsectrl" in folders:
        sparse = load_component(cls["appearance"], str(folders["sparsectrl"]), None, "SparseCtrl appearance branch", **kwargs)
    return CCEditPipeline(
        vae=load_component(cls["vae"], base, "vae", "VAE", **kwargs),
        text_encoder=load_component(cls["text_encoder"], base, "text_encoder", "text encoder", dtype=dtype,
                           trust_remote_code=False),
        tokenizer=load_tokenizer(base),
        unet=load_component(cls["unet"], base, "unet", "base UNet", **kwargs),
        temporal=load_component(cls["temporal"], adapter_path, None, "motion adapter", **kwargs),
        controlnet=nets, scheduler=build_scheduler(scheduler), appearance=sparse, sampling_convention="diffusers",
    )


def load_pipeline(
    model: str,
    *,
    controlnets: Sequence[str | None] = (None,),
    tokenizer: str | None = None,
    scheduler: str = "dpmpp_2s_ancestral",
    dtype: str = "auto",
    device: str = "auto",
    base: str | None = None,
    loras: Sequence = (),
    fuse_lora: bool = False,
    parts: dict | None = None,
) -> CCEditPipeline:
    """Build the pipeline for `model` with one ControlNet per entry of `controlnets`.

    Args:
        model (`str`): `"tiny"` (a random CCEdit trident), `"animatediff-tiny"` (a random open trident: AnimateDiff
            motion modules + ControlNet), a folder written by `ccedit convert`, or a hub id with the same layout.
        controlnets: per structure annotator, `None` for the model's own ControlNet, or a ControlNet path / hub id.
        tokenizer (`str`, *optional*): tokenizer path or hub id when the model has no `tokenizer/` folder.
        scheduler (`str`): a name from `ccedit.schedulers.SCHEDULERS`.
        dtype, device: `"auto"` picks float16 on CUDA and float32 on CPU.
        base (`str`, *optional*): a personalised SD-1.5 base replacing the model's frozen UNet (`personalise.py`).
        loras: LoRAs (`LoraSpec`s or config entries `{path, scale}`) on the UNet and text encoder.
        parts (`dict`, *optional*): for `model="animatediff"`, the open trident's parts (`OPEN_TRIDENT_PARTS`).
    """
    if model == "animatediff":
        device_ = resolve_device(device)
        pipe = load_open_trident(parts or {}, controlnets, scheduler, resolve_dtype(dtype, device_)).to(device_)
    else:
        pipe = _load_model(model, controlnets, tokenizer, scheduler, dtype, device)
    if base is not None or loras:
        from .personalise import LoraSpec, load_base, load_loras

        if base is not None:
            load_base(pipe, base)
        load_loras(pipe, [l if isinstance(l, LoraSpec) else LoraSpec.from_config(l) for l in loras], fuse=fuse_lora)
    return pipe


def _load_model(model, controlnets, tokenizer, scheduler, dtype, device) -> CCEditPipeline:
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    if model in ("tiny", "animatediff-tiny"):
        from .tiny import tiny_animatediff_components, tiny_components, tiny_controlnet

        components = tiny_components(keyframe=True) if model == "tiny" else tiny_animatediff_components()
        nets = [components["controlnet"] if c is None else tiny_controlnet(seed=i) for i, c in enumerate(controlnets)]
        components["controlnet"] = nets
        components["scheduler"] = build_scheduler(scheduler)
        pipe = CCEditPipeline(**components).to(device_)
        # Casting float32 to float32 would only make diffusers warn about modules that must stay float32.
        return pipe.to(dtype=dtype_) if dtype_ != torch.float32 else pipe

    folder = check_model_folder(model, resolve_model_folder(model))
    path = str(folder)
    kwargs = dict(torch_dtype=dtype_)
    cls = MODEL_NETWORKS
    unet = load_component(cls["unet"], path, "unet", "base UNet", **kwargs)
    temporal = load_component(cls["temporal"], path, "temporal", "temporal layers", **kwargs)
    vae = load_component(cls["vae"], path, "vae", "VAE", **kwargs)
    # transformers classes take `trust_remote_code`: never run code shipped in a model folder. (diffusers' model
    # classes have no such option; they only ever build their own class.)
    text_encoder = load_component(cls["text_encoder"], path, "text_encoder", "text encoder", dtype=dtype_,
                         trust_remote_code=False)
    has_appearance = (folder / "appearance").is_dir()
    appearance = (load_component(cls["appearance"], path, "appearance", "appearance encoder", **kwargs) if has_appearance
                  else None)
    nets = [
        load_component(cls["controlnet"], path, "controlnet", "ControlNet", **kwargs) if c is None
        else load_component(cls["controlnet"], str(resolve_model_folder(c, "ControlNet", "structure.controlnets=[..., DIR]")),
                   None, "ControlNet", **kwargs)
        for c in controlnets
    ]
    if tokenizer is None and not (folder / "tokenizer").is_dir():
        raise ModelNotFoundError(f"{folder} has no tokenizer/: pass model.tokenizer=<path or hub id of an SD-1.5 tokenizer>")
    tok = load_tokenizer(tokenizer or path)
    pipe = CCEditPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, temporal=temporal, controlnet=nets,
        scheduler=build_scheduler(scheduler), appearance=appearance,
    )
    return pipe.to(device_)


def depth_estimator_path(model: str) -> str | None:
    """The depth estimator converted with the model, if the model folder has one."""
    folder = Path(model).expanduser() / DEPTH_SUBFOLDER
    return str(folder) if model != "tiny" and folder.is_dir() else None
