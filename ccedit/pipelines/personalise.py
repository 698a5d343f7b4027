"""Models users bring: a personalised SD-1.5 base under the temporal layers and side branches, and LoRAs.

The base replaces the frozen UNet (and the text encoder and VAE when the checkpoint has them); a diffusers folder,
a hub id or a single-file checkpoint in the original SD layout (diffusers' single-file loading) all work. LoRAs go
through diffusers' LoRA loading (PEFT) on the UNet and the text encoder, several at once with their scales. The
base is always applied before the LoRAs, so the result does not depend on the order in which they are given.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..errors import ModelNotFoundError, UserError
from .model_folders import load_component, resolve_model_folder

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the file diffusers saves a LoRA folder's weights in


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: a file or folder (diffusers or kohya format) or a hub id, its scale, and its adapter name."""

    path: str
    scale: float = 1.0
    name: str | None = None

    @classmethod
    def from_config(cls, entry) -> "LoraSpec":
        if isinstance(entry, str):
            return cls(entry)
        if not isinstance(entry, dict) or "path" not in entry:
            raise UserError(f"model.lora entries are {{path: ..., scale: ...}}, got {entry!r}")
        unknown = set(entry) - {"path", "scale", "name"}
        if unknown:
            raise UserError(f"model.lora entry has unknown keys {sorted(unknown)}: use path, scale and name")
        return cls(str(entry["path"]), float(entry.get("scale", 1.0)), entry.get("name"))


def load_base(pipe, base: str, dtype: torch.dtype | None = None) -> None:
    """Replace `pipe`'s frozen UNet (and text encoder and VAE where `base` has them) by those of `base`.

    LoRAs loaded before are moved onto the new base, so base and LoRAs may come in either order.
    """
    unet, text_encoder, vae = _read_base(base, pipe.unet.config, dtype or pipe.unet.dtype)
    _check_fits(pipe, unet, base)
    loras = list(getattr(pipe, "_ccedit_loras", ()))
    if loras:
        pipe.unload_lora_weights()
    parts = {"unet": unet}
    if text_encoder is not None:
        parts["text_encoder"] = text_encoder
    if vae is not None:
        parts["vae"] = vae
    pipe.register_modules(**{k: v.to(pipe.unet.device) for k, v in parts.items()})
    logger.info("base model %s: replaced %s", base, ", ".join(parts))
    if loras:
        load_loras(pipe, loras)


def load_loras(pipe, loras: Sequence[LoraSpec], fuse: bool = False, takes: str = "an SD-1.5 LoRA") -> list[str]:
    """Load `loras` onto `pipe`'s networks through its diffusers LoRA loader, with their scales; return the adapter
    names. `takes` says which LoRAs the model takes, for the one-line error of one that does not load."""
    names = []
    for i, lora in enumerate(loras):
        name = lora.name or f"lora_{i}"
        try:
            pipe.load_lora_weights(_lora_location(lora.path), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot load the LoRA {lora.path} onto this model ({reason}): it must be "
                            f"{takes}") from None
        names.append(name)
    if names:
        pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
        if fuse:
            pipe.fuse_lora(adapter_names=names)
        pipe._ccedit_loras = [*getattr(pipe, "_ccedit_loras", ()), *loras]
    return names


def personalise(pipe, base: str | None, loras: Sequence, fuse: bool = False) -> None:
    """A personalised `base` under the main branch's temporal layers, then `loras` (`LoraSpec`s or config entries
    `{path, scale}`), folded into the weights when `fuse`."""
    if base is not None:
        load_base(pipe, base)
    load_loras(pipe, lora_specs(loras), fuse=fuse)


def lora_specs(loras: Sequence) -> list[LoraSpec]:
    """`LoraSpec`s of `loras`, given as specs or as config entries (`{path, scale}` or a path)."""
    return [lora if isinstance(lora, LoraSpec) else LoraSpec.from_config(lora) for lora in loras]


def lora_file_keys(path: str) -> list[str] | None:
    """The tensor names of a local LoRA (a .safetensors file, or a folder with diffusers' weight file), read without
    loading a tensor; None for a hub id or another format (the loader reads those itself)."""
    from safetensors import safe_open

    location = Path(_lora_location(path))
    if location.is_dir():
        location = location / LORA_WEIGHT_NAME
    if location.suffix != ".safetensors" or not location.is_file():
        return None
    try:
        with safe_open(str(location), framework="pt") as weights:
            return list(weights.keys())
    except (OSError, ValueError, RuntimeError) as e:  # safetensors' header errors are plain exceptions
        raise UserError(f"cannot read the LoRA {path} ({e}): pass a .safetensors LoRA file or folder") from None


def _lora_location(path: str) -> str:
    location = Path(path).expanduser()
    if location.exists():
        return str(location)
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        return path  # a hub id
    raise ModelNotFoundError(f"LoRA not found: {path}; pass a .safetensors file, a LoRA folder or a hub id")


def _read_base(base: str, unet_config, dtype: torch.dtype):
    """The UNet, text encoder and VAE of `base` (the latter two `None` when it has none)."""
    location = Path(base).expanduser()
    if location.suffix in SINGLE_FILE_SUFFIXES:
        if not location.is_file():
            raise ModelNotFoundError(f"base model file not found: {base}")
        return _read_single_file(location, unet_config, dtype)

    folder = resolve_model_folder(base, "base model", "model.base=DIR")
    if (folder / "unet").is_dir():
        unet = load_component(UNet2DConditionModel, str(folder), "unet", "base UNet", torch_dtype=dtype)
    elif (folder / "config.json").is_file():
        unet = load_component(UNet2DConditionModel, str(folder), None, "base UNet", torch_dtype=dtype)
    else:
        raise ModelNotFoundError(f"{base} holds no UNet (no unet/ or config.json): pass an SD-1.5 model folder or file")
    text_encoder = vae = None
    if (folder / "text_encoder").is_dir():
        from transformers import CLIPTextModel

        text_encoder = load_component(CLIPTextModel, str(folder), "text_encoder", "base text encoder", dtype=dtype,
                             trust_remote_code=False)
    if (folder / "vae").is_dir():
        vae = load_component(AutoencoderKL, str(folder), "vae", "base VAE", torch_dtype=dtype)
    return unet, text_encoder, vae


def _read_single_file(path: Path, unet_config, dtype: torch.dtype):
    """A UNet (and VAE when present) from one checkpoint in the original SD layout, through diffusers' single-file
    loading. The architecture comes from the current UNet's config, written to a folder, so nothing is fetched."""
    with tempfile.TemporaryDirectory() as config_dir:
        UNet2DConditionModel.from_config(unet_config).save_config(config_dir)
        try:
            unet = UNet2DConditionModel.from_single_file(str(path), config=config_dir, torch_dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot read {path} as an SD-1.5 checkpoint ({reason})") from None
    return unet, None, None


def _check_fits(pipe, unet: UNet2DConditionModel, base: str) -> None:
    """A base of another family (SDXL, SD-2) cannot carry SD-1.5 temporal layers and side branches."""
    from ..models.trident import build_trident

    ours = pipe.unet.config
    for key in ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block"):
        if tuple(_as_tuple(unet.config[key])) != tuple(_as_tuple(ours[key])):
            raise UserError(
                f"base model {base} is not of this model's family: its UNet's {key} is {unet.config[key]}, the "
                f"temporal layers and ControlNets need {ours[key]} (an SD-1.5 base)"
            )
    try:
        build_trident(unet, pipe.temporal, pipe.controlnets, pipe.appearance)
    except ValueError as e:
        raise UserError(f"base model {base} does not fit this model: {e}") from None


def _as_tuple(value):
    return value if isinstance(value, (list, tuple)) else (value,)
