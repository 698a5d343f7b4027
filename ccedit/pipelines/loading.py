"""Load a `CCEditPipeline` from the built-in tiny model, a converted model folder or a hub id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..annotators.loading import is_hub_reachable, is_offline
from ..errors import ModelNotFoundError, is_unreadable_weights, unreadable_weights
from ..models import AppearanceEncoder, CCEditTemporalAdapter
from ..schedulers import build_scheduler
from .pipeline_ccedit import CCEditPipeline

logger = logging.getLogger(__name__)

# The folder layout `ccedit convert` writes (diffusers-style, one sub-folder per component).
REQUIRED_SUBFOLDERS = ("unet", "temporal", "controlnet", "vae", "text_encoder")
DEPTH_SUBFOLDER = "depth_estimator"
HOW_TO_GET = "convert a released CCEdit checkpoint with `ccedit convert CKPT --out DIR` and pass --model DIR"


TOKENIZER_FILES = ("vocab.json", "tokenizer.json")


def load_tokenizer(reference: str, what: str = "tokenizer") -> CLIPTokenizer:
    """A CLIP tokenizer from a folder (itself or its `tokenizer/`) or a hub id's `tokenizer/`.

    The files are resolved first, because `from_pretrained` of an unreachable hub id returns an empty
    tokenizer instead of failing.
    """
    folder = Path(reference).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(reference, allow_patterns=["tokenizer/*"],
                                            local_files_only=not is_hub_reachable())) / "tokenizer"
        except Exception as e:  # offline, unknown repo, no access: all mean the same to the user
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelNotFoundError(
                f"cannot get the {what} {reference!r} ({reason}): pass a local SD-1.5 folder or tokenizer folder "
                "with model.tokenizer=DIR, or a hub id while online"
            ) from None
    elif (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFoundError(f"{folder} holds no tokenizer ({' or '.join(TOKENIZER_FILES)} missing)")
    return CLIPTokenizer.from_pretrained(str(folder), trust_remote_code=False)


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}  # besides "auto"


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


def resolve_model_folder(model: str, what: str = "model", option: str = "--model DIR") -> Path:
    """A local folder for `model`: the folder itself, or the snapshot of a hub id (downloaded once, then cached;
    only the cache when the hub does not answer). `option` is the setting that takes a local folder instead.

    Resolving first gives one clear error at once, where `from_pretrained` on an unreachable hub would retry for
    half a minute and then report a missing `config.json`.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelNotFoundError(f"{what} folder not found: {model}; {HOW_TO_GET}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=not is_hub_reachable()))
    except Exception as e:  # offline, unknown repo, no access: the user needs the same advice
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not is_hub_reachable():
            reason = "not in the local cache; HF_HUB_OFFLINE is set" if is_offline() else (
                "not in the local cache; the hub does not answer")
        advice = HOW_TO_GET if option == "--model DIR" else f"pass a local folder with {option}"
        raise ModelNotFoundError(
            f"{what} {model!r} is not a local folder and could not be fetched from the hub ({reason}); {advice}"
        ) from None


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
        else _load(ControlNetModel, str(resolve_model_folder(c, "ControlNet", "structure.controlnets=[..., DIR]")), None,
                   "ControlNet", **kwargs)
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
