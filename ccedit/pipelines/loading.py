"""Load a `CCEditPipeline` from the built-in tiny model, a converted model folder or a hub id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel

from .. import hub
from ..errors import ModelNotFoundError, is_unreadable_weights, unreadable_weights
from ..models import AppearanceEncoder, CCEditTemporalAdapter
from ..schedulers import build_scheduler
from ..hub import load_tokenizer
from .pipeline_ccedit import CCEditPipeline

logger = logging.getLogger(__name__)

# The folder layout `ccedit convert` writes (diffusers-style, one sub-folder per component).
REQUIRED_SUBFOLDERS = ("unet", "temporal", "controlnet", "vae", "text_encoder")
DEPTH_SUBFOLDER = "depth_estimator"
HOW_TO_GET = "convert a released CCEdit checkpoint with `ccedit convert CKPT --out DIR` and pass --model DIR"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ModelNotFoundError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return table[dtype]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_model_folder(model: str, what: str = "model") -> Path:
    """`hub.resolve_model_folder` with the advice for ccedit model folders."""
    return hub.resolve_model_folder(model, what, hint=HOW_TO_GET)


def _load(cls, path: str, subfolder: str | None, what: str, **kwargs):
    try:
        if subfolder is None:
            return cls.from_pretrained(path, **kwargs)
        return cls.from_pretrained(path, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as e:
        where = f"{path}/{subfolder}" if subfolder else path
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotFoundError(f"cannot load the {what} from {where} ({reason}); {HOW_TO_GET}") from None
    except Exception as e:
        if not is_unreadable_weights(e):
            raise
        raise unreadable_weights(what, Path(path) / (subfolder or ""), e) from None


def load_pipeline(
    model: str,
    *,
    controlnets: Sequence[str | None] = (None,),
    tokenizer: str | None = None,
    scheduler: str = "dpmpp_2s_ancestral",
    dtype: str = "auto",
    device: str = "auto",
) -> CCEditPipeline:
    """Build the pipeline for `model` with one ControlNet per entry of `controlnets`.

    Args:
        model (`str`): `"tiny"`, a folder written by `ccedit convert`, or a hub id with the same layout.
        controlnets: per structure annotator, `None` for the model's own ControlNet, or a ControlNet path / hub id.
        tokenizer (`str`, *optional*): tokenizer path or hub id when the model has no `tokenizer/` folder.
        scheduler (`str`): a name from `ccedit.schedulers.SCHEDULERS`.
        dtype, device: `"auto"` picks float16 on CUDA and float32 on CPU.
    """
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    if model == "tiny":
        from .tiny import tiny_components, tiny_controlnet

        components = tiny_components(keyframe=True)
        nets = [components["controlnet"] if c is None else tiny_controlnet(seed=i) for i, c in enumerate(controlnets)]
        components["controlnet"] = nets
        components["scheduler"] = build_scheduler(scheduler)
        pipe = CCEditPipeline(**components).to(device_)
        # Casting float32 to float32 would only make diffusers warn about modules that must stay float32.
        return pipe.to(dtype=dtype_) if dtype_ != torch.float32 else pipe

    folder = resolve_model_folder(model)
    missing = [s for s in REQUIRED_SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        raise ModelNotFoundError(f"{model} is not a ccedit model folder: missing {', '.join(missing)}/; {HOW_TO_GET}")
    path = str(folder)
    kwargs = dict(torch_dtype=dtype_)
    unet = _load(UNet2DConditionModel, path, "unet", "base UNet", **kwargs)
    temporal = _load(CCEditTemporalAdapter, path, "temporal", "temporal layers", **kwargs)
    vae = _load(AutoencoderKL, path, "vae", "VAE", **kwargs)
    # transformers classes take `trust_remote_code`: never run code shipped in a model folder. (diffusers' model
    # classes have no such option; they only ever build their own class.)
    text_encoder = _load(CLIPTextModel, path, "text_encoder", "text encoder", dtype=dtype_, trust_remote_code=False)
    has_appearance = (folder / "appearance").is_dir()
    appearance = _load(AppearanceEncoder, path, "appearance", "appearance encoder", **kwargs) if has_appearance else None
    nets = [
        _load(ControlNetModel, path, "controlnet", "ControlNet", **kwargs) if c is None
        else _load(ControlNetModel, str(resolve_model_folder(c, "ControlNet")), None, "ControlNet", **kwargs)
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
