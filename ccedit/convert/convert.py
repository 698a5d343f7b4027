"""`ccedit convert`: a released CCEdit checkpoint -> a ccedit model folder (one sub-folder per component).

The checkpoint is memory-mapped; each component's tensors are mapped by name (views of the file, no copies), checked
against the target module built on the meta device, and written straight to safetensors one component at a time,
so a 10.9 GB file converts without ever holding a second copy of the weights. The folder appears only when every
component was written (`io.publish`), and `--overwrite` replaces only a folder this command wrote
(`model_folder_refusal`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..errors import UserError
from ..io.publish import check_destination, publish_set
from ..models import AppearanceEncoder, CCEditTemporalAdapter
from ..schedulers.dpmpp_2s_ancestral import DPMPP2SAncestralScheduler
from ..hub import load_tokenizer
from .checkpoint import open_state_dict
from .clip import CLIP_PREFIX, clip_text_config, convert_clip
from .fixtures import STATE_PREFIX, read_geometry
from ..models.geometry import SD15_GEOMETRY, Geometry
from .midas import MIDAS_PREFIX, convert_midas, dpt_hybrid_config
from .networks import NETWORK_PREFIX, map_networks
from .trident_keys import MappedState
from .vae import VAE_PREFIX, convert_vae, sd15_vae_config

logger = logging.getLogger(__name__)

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
DENOISER_KEY = "denoiser.sigmas"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Library and class of each component, for model_index.json (the diffusers folder convention; diffusers imports a
# custom class from the module path written here).
COMPONENT_CLASSES = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "temporal": (CCEditTemporalAdapter.__module__, CCEditTemporalAdapter.__name__),
    "controlnet": ("diffusers", "ControlNetModel"),
    "appearance": (AppearanceEncoder.__module__, AppearanceEncoder.__name__),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "scheduler": (DPMPP2SAncestralScheduler.__module__, DPMPP2SAncestralScheduler.__name__),
}


# What `convert_checkpoint` puts in a model folder; a folder holding anything else is not replaced.
MODEL_FOLDER_ENTRIES = {*COMPONENT_CLASSES, "depth_estimator", "model_index.json"}


def model_folder_refusal(path: Path) -> str | None:
    """Why `path` may not be replaced by a conversion, or None when it is a ccedit model folder.

    A model folder has a `model_index.json` naming `CCEditPipeline` and the checkpoint it came from (the marker
    `convert_checkpoint` writes), and nothing but component folders next to it.
    """
    hint = "--overwrite replaces only a model folder written by `ccedit convert`: choose another --out"
    if not path.is_dir() or path.is_symlink():
        return f"{path} is not a ccedit model folder (not a folder); {hint}"
    try:
        index = json.loads((path / "model_index.json").read_text())
        entries = {p.name for p in path.iterdir()}
    except (OSError, ValueError):
        index, entries = None, set()
    if not (isinstance(index, dict) and index.get("_class_name") == "CCEditPipeline" and "_ccedit_source" in index):
        return f"{path} is not a ccedit model folder (no ccedit model_index.json); {hint}"
    foreign = sorted(entries - MODEL_FOLDER_ENTRIES)
    if foreign:
        return f"{path} holds files that are not part of a ccedit model ({', '.join(foreign[:3])}); {hint} or move them"
    return None


def _write_weights(folder: Path, filename: str, state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state.items():
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    save_file(tensors, str(folder / filename), metadata={"format": "pt"})


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict, and whether it came from a reference-fixture file (`state.*` keys plus fixture data)."""
    state = open_state_dict(path)
    if any(k.startswith(STATE_PREFIX) for k in state):
        # A fixture: network keys under `state.`, the rest are its stored inputs and outputs, not weights.
        return {k[len(STATE_PREFIX) :]: v.float() for k, v in state.items() if k.startswith(STATE_PREFIX)}, True
    return state, False


def _component_configs(geometry_file: Path | None) -> dict[str, Any]:
    """Optional configs of the non-network components: SD-1.5's unless the geometry file gives tiny ones."""
    extra = json.loads(geometry_file.read_text()) if geometry_file else {}
    from transformers import CLIPTextConfig, DPTConfig

    return {
        "vae": {**sd15_vae_config(), **extra["vae"]} if "vae" in extra else sd15_vae_config(),
        "text_encoder": CLIPTextConfig(**extra["text_encoder"]) if "text_encoder" in extra else clip_text_config(),
        "depth_estimator": DPTConfig(**extra["depth_estimator"]) if "depth_estimator" in extra else dpt_hybrid_config(),
    }


@dataclass
class ConversionPlan:
    """Every component's mapped tensors (views of the checkpoint), checked against its target's names and shapes."""

    networks: MappedState
    meta_modules: dict
    others: dict[str, tuple[dict, set]]
    consumed: set[str]
    configs: dict[str, Any]


def plan_conversion(
    state: Mapping[str, torch.Tensor],
    geometry: Geometry,
    *,
    prefix: str = NETWORK_PREFIX,
    source: str = "checkpoint",
    configs: dict[str, Any] | None = None,
    networks_only: bool = False,
) -> ConversionPlan:
    """Map every key of `state` to a component, or raise `UserError` naming the keys that fit nowhere.

    Works on meta tensors too, so the full-size key listings can be checked without weights.
    """
    configs = configs or _component_configs(None)
    networks, meta_modules = map_networks(state, geometry, prefix=prefix, source=source)
    consumed = set(networks.consumed)
    others: dict[str, tuple[dict, set]] = {}
    if not networks_only:
        if any(k.startswith(VAE_PREFIX) or ".first_stage_model." in k for k in state):
            others["vae"] = convert_vae(state, configs["vae"])
        if any(k.startswith(CLIP_PREFIX) for k in state):
            others["text_encoder"] = convert_clip(state, configs["text_encoder"])
        if any(k.startswith(MIDAS_PREFIX) for k in state):
            others["depth_estimator"] = convert_midas(state, configs["depth_estimator"])
        for _, keys in others.values():
            consumed |= keys
        if DENOISER_KEY in state:
            consumed.add(DENOISER_KEY)  # the DDPM sigma table, recomputed by ccedit's schedulers
    unexpected = sorted(set(state) - consumed)
    if unexpected:
        raise UserError(
            f"{source} has {len(unexpected)} keys that are not part of a CCEdit model "
            f"(e.g. {', '.join(unexpected[:5])}): is it a CCEdit checkpoint?"
        )
    return ConversionPlan(networks, meta_modules, others, consumed, configs)


def convert_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    geometry_file: str | Path | None = None,
    tokenizer: str | None = "stable-diffusion-v1-5/stable-diffusion-v1-5",
    dtype: str = "keep",
    overwrite: bool = False,
) -> str:
    """Convert a CCEdit checkpoint into a model folder and return a one-line summary.

    Args:
        checkpoint: a released `.ckpt` (Lightning or bare dict), or a safetensors state dict in CCEdit's key names
            (networks under `model.diffusion_model.`, or `state.*` as in the reference fixtures).
        out: the folder to write; it appears only when everything was written.
        geometry_file: JSON geometry for networks that are not SD-1.5 sized (the fixtures' `tiny_config.json`
            works); it may also hold `vae`, `text_encoder` and `depth_estimator` configs for tiny components.
        tokenizer: path or hub id of the SD-1.5 tokenizer; needed only when the checkpoint holds a text encoder.
        dtype: `keep`, `float32`, `float16` or `bfloat16`.
        overwrite: replace an existing folder.

    Raises:
        `UserError`: unreadable or unsafe file, unexpected or missing keys, shapes that do not fit the geometry,
        or a missing tokenizer. Nothing is written then.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if overwrite and out.exists():
        refusal = model_folder_refusal(out)
        if refusal:
            raise UserError(refusal)
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0  # the folder is at most about this big
    check_destination([out], overwrite=overwrite, folders=[out], estimate_bytes=size, flag="--out")
    if dtype != "keep" and dtype not in DTYPES:
        raise UserError(f"--dtype must be keep, float32, float16 or bfloat16, got {dtype}")
    cast = DTYPES.get(dtype)
    state, is_fixture = _read_checkpoint(checkpoint)
    prefix = "" if is_fixture else NETWORK_PREFIX
    geometry_path = Path(geometry_file) if geometry_file else None
    if geometry_path is not None and not geometry_path.is_file():
        raise UserError(f"geometry file not found: {geometry_path}")
    geometry = read_geometry(geometry_path, checkpoint) if geometry_path else Geometry.from_dict(SD15_GEOMETRY)
    if is_fixture and geometry_path is None:
        raise UserError(f"{checkpoint} is a state dict without a geometry: pass --geometry (e.g. tiny_config.json)")

    # 1. Map everything before writing anything: a bad key fails here, with nothing on disk.
    plan = plan_conversion(state, geometry, prefix=prefix, source=str(checkpoint),
                           configs=_component_configs(geometry_path if geometry_path and not is_fixture else None),
                           networks_only=is_fixture)
    others = plan.others
    # A released checkpoint carries its VAE and CLIP text encoder; without them the folder could not edit anything.
    absent = [name for name, keys in (("VAE", "vae"), ("CLIP text encoder", "text_encoder")) if keys not in others]
    if absent and not is_fixture:
        raise UserError(
            f"{checkpoint} holds no {' and no '.join(absent)} (first_stage_model.* / conditioner.embedders.0.* keys): the "
            "converted folder could not edit; convert the full CCEdit checkpoint"
        )
    tok = load_tokenizer(tokenizer) if "text_encoder" in others and tokenizer else None
    if "text_encoder" in others and tok is None:
        raise UserError("the checkpoint holds a text encoder but no tokenizer: pass --tokenizer PATH_OR_HUB_ID")

    # 2. Write each component, then publish the folder in one rename.
    progress = tqdm(total=len(plan.meta_modules) + len(others), desc="writing", unit="component", file=sys.stderr)
    # Staged next to `out` and published in one rename; the folder it replaces (a model folder only, checked again
    # at that moment) stays until the new one is in place, and a concurrent convert to `out` is refused.
    with publish_set([out], overwrite=overwrite, may_replace=model_folder_refusal) as stage, progress:
        tmp = stage.path(out)
        tmp.mkdir()
        written = _write_components(tmp, plan, cast, progress.update)
        if tok is not None:
            tok.save_pretrained(tmp / "tokenizer")
            written.append("tokenizer")
        _write_pipeline_files(tmp, checkpoint.name)
    return f"wrote {out}: {', '.join(written)}, scheduler; {len(plan.consumed)} checkpoint keys mapped"


def _write_components(folder: Path, plan: ConversionPlan, cast: torch.dtype | None,
                      done: Callable[[], object]) -> list[str]:
    """Each mapped component's config and weights (cast to `cast` unless None) into `folder`; the names written,
    with the networks' tensor counts. `done` is called after each component."""
    written = []
    for name, module in plan.meta_modules.items():
        module.save_config(folder / name)
        _write_weights(folder / name, DIFFUSERS_WEIGHTS, plan.networks.components[name], cast)
        written.append(f"{name} ({len(plan.networks.components[name])})")
        done()
    if "vae" in plan.others:
        from diffusers import AutoencoderKL

        with torch.device("meta"):  # only its config is saved; the weights come from the checkpoint
            AutoencoderKL(**plan.configs["vae"]).save_config(folder / "vae")
        _write_weights(folder / "vae", DIFFUSERS_WEIGHTS, plan.others["vae"][0], cast)
        written.append("vae")
        done()
    for name, architecture in (("text_encoder", "CLIPTextModel"), ("depth_estimator", "DPTForDepthEstimation")):
        if name in plan.others:
            config = plan.configs[name]
            config.architectures = [architecture]  # lets transformers' Auto classes load the folder
            config.save_pretrained(folder / name)
            _write_weights(folder / name, TRANSFORMERS_WEIGHTS, plan.others[name][0], cast)
            written.append(name)
            done()
    return written


def _write_pipeline_files(folder: Path, source_name: str) -> None:
    """The sampler's config and `model_index.json` listing the components present, so that
    `CCEditPipeline.from_pretrained(folder)` loads the folder as diffusers' folder convention has it."""
    import diffusers

    from ..schedulers import build_scheduler

    build_scheduler("dpmpp_2s_ancestral").save_config(folder / "scheduler")
    index = {"_class_name": "CCEditPipeline", "_diffusers_version": diffusers.__version__,
             "_ccedit_source": source_name}
    for name in ("unet", "temporal", "controlnet", "appearance", "vae", "text_encoder", "tokenizer", "scheduler"):
        if (folder / name).is_dir():
            index[name] = list(COMPONENT_CLASSES[name])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
