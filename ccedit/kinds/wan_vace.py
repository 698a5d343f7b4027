"""Wan2.1-VACE: a video diffusion transformer (flow matching, a causal VAE with 4 frames per latent, a UMT5 text
encoder) whose VACE blocks read a context video, a mask and reference images; in diffusers' folder layout
(`WanVACEPipeline`), from a folder or a hub id (`wan-vace` is the 1.3B release), and `wan-vace-tiny`, a random one
built offline. ccedit runs it in its own pipeline (`pipelines/pipeline_wan_vace.py`): the structure maps are the
context video, keyframes are kept at their frames, clips of any length are denoised in fused windows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .base import Conventions, ModelKind, ModelRef, Part

# Wan2.1 was trained on 81-frame clips (21 latent frames) and samples with flow-matching UniPC, as diffusers runs
# it; sides are multiples of 16 (the VAE's 8 times the transformer's 2x2 patches).
WAN_VACE_CONVENTIONS = Conventions(native_frames=81, size_multiple=16, latent_time_factor=4, prediction_type="flow",
                                   scheduler="unipc", sampling_convention="diffusers", centred_keyframes=False,
                                   anchor_prior=False, reference_images=True)
RELEASED = {"wan-vace": "Wan-AI/Wan2.1-VACE-1.3B-diffusers"}
HUB_PREFIX = "Wan-AI/Wan2.1-VACE-"
# The released geometry (`memory_vace.RELEASED_TRANSFORMERS`) of each hub id, for estimates without its configs.
RELEASED_SIZES = {f"{HUB_PREFIX}1.3B-diffusers": "1.3B", f"{HUB_PREFIX}14B-diffusers": "14B"}
DEFAULT_SIZE = "1.3B"  # a Wan-VACE hub id of no known size
PIPELINE_CLASSES = ("WanVACEPipeline", "WanVACEEditPipeline")
# The parts of a released folder, in trident roles (the order `ccedit models` lists them).
ROLES = {
    "transformer": "main branch: Wan2.1 video transformer, with VACE's context blocks (structure and keyframes)",
    "vae": "Wan's causal video VAE (4 frames per latent)", "text_encoder": "UMT5 text encoder",
    "tokenizer": "UMT5 tokenizer", "scheduler": "flow-matching scheduler (shift)",
}
# Flow-matching samplers by the names `sampling.scheduler` takes.
FLOW_SCHEDULERS = ("unipc", "euler")
DEFAULT_SHIFT = 3.0  # Wan2.1 at 480p (diffusers' examples use 5.0 at 720p)


# Tensor-name prefixes of LoRAs for an SD UNet and CLIP text encoder (diffusers' and kohya's names), which a Wan
# transformer cannot take; Wan's own LoRAs name `transformer.` or `diffusion_model.` blocks (`lora_unet_blocks_`).
UNET_LORA_PREFIXES = ("unet.", "text_encoder.", "lora_te", "lora_unet_down_blocks", "lora_unet_mid_block",
                      "lora_unet_up_blocks", "lora_unet_input_blocks", "lora_unet_output_blocks")
WAN_LORAS = "a Wan2.1 LoRA for this model's transformer (diffusers' or the original's format)"


def _pipeline_class(folder: Path) -> str | None:
    try:
        return json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class WanFamily(ModelKind):
    """What every Wan2.1-VACE kind shares: its precision, its memory estimate, its LoRAs on the transformer and no
    SD-1.5 base."""

    def check_structure(self, controlnets: list) -> None:
        """VACE reads one context video: one structure annotator, no ControlNet."""
        from ..errors import UserError

        if len(controlnets) != 1 or controlnets[0] is not None:
            raise UserError(f"{self.name} takes one structure annotator's maps as its context video and no "
                            "ControlNet: set one structure.annotators entry and structure.controlnets=null")

    def main_dtype(self, dtype: str, device):
        return wan_dtype(dtype, device)

    def networks(self, model: ModelRef):
        """The model's networks on the meta device (`memory_vace.VACENetworks`) and a note on where they come from
        (None: the model's own configs)."""
        raise NotImplementedError

    def estimate_memory(self, model: ModelRef, controlnets, **settings):
        from ..memory_vace import estimate_vace_edit_memory

        networks, note = self.networks(model)
        estimate = estimate_vace_edit_memory(networks, **settings)
        estimate.notes.extend([note] if note else [])
        return estimate

    def personalise(self, pipe, base: str | None, loras, fuse: bool) -> None:
        from ..errors import UserError
        from ..pipelines.personalise import load_loras, lora_file_keys, lora_specs

        if base is not None:
            raise UserError(f"model.base replaces an SD-1.5 UNet, and {self.name} is a video transformer with none: "
                            "leave model.base unset (model.lora takes Wan2.1 LoRAs)")
        specs = lora_specs(loras)
        for spec in specs:
            keys = lora_file_keys(spec.path) or ()
            if any(key.startswith(UNET_LORA_PREFIXES) for key in keys):
                raise UserError(f"the LoRA {spec.path} is for a Stable Diffusion UNet and text encoder (its tensors "
                                f"name unet/text encoder layers), not for {self.name}: give {WAN_LORAS}")
        load_loras(pipe, specs, fuse=fuse, takes=WAN_LORAS)


@dataclass(frozen=True)
class WanVACE(WanFamily):
    """A Wan2.1-VACE folder in diffusers' layout, or its hub id."""

    def claims(self, model: str) -> bool:
        if model in self.names or model.startswith(HUB_PREFIX):
            return True
        from ..hub import cached_model_folder

        folder = cached_model_folder(model)
        return folder is not None and _pipeline_class(folder) in PIPELINE_CLASSES

    def reference(self, model: ModelRef) -> str:
        return RELEASED.get(model.path, model.path)

    def _folder(self, model: ModelRef) -> Path:
        from ..errors import ModelNotFoundError
        from ..pipelines.model_folders import resolve_model_folder

        reference = self.reference(model)
        folder = resolve_model_folder(reference, "Wan-VACE model", "model.path=DIR")
        missing = [part for part in ROLES if not (folder / part).is_dir()]
        if missing or _pipeline_class(folder) not in PIPELINE_CLASSES:
            lacks = f"no {', '.join(m + '/' for m in missing)}" if missing else "its model_index.json names no VACE"
            raise ModelNotFoundError(f"{reference} is not a complete Wan-VACE folder ({lacks}): download "
                                     f"{RELEASED['wan-vace']} or {HUB_PREFIX}14B-diffusers whole")
        return folder

    def check(self, model: ModelRef) -> None:
        self._folder(model)

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str, shift: float | None = None):
        import torch
        from diffusers import AutoencoderKLWan

        from ..pipelines.loading import resolve_device
        from ..pipelines.model_folders import load_component
        from ..pipelines.pipeline_wan_vace import WanVACEEditPipeline

        self.check_structure(controlnets)
        folder = str(self._folder(model))
        device_ = resolve_device(device)
        # Wan's VAE runs in float32 (as diffusers' examples load it); the transformer in the edit's dtype.
        vae = load_component(AutoencoderKLWan, folder, "vae", "Wan VAE", torch_dtype=torch.float32)
        pipe = load_component(WanVACEEditPipeline, folder, None, "Wan-VACE pipeline", vae=vae,
                              torch_dtype=wan_dtype(dtype, device_))
        pipe.scheduler = flow_scheduler(scheduler, pipe.scheduler.config, shift)
        return pipe.to(device_)

    def skeleton(self, model: ModelRef, controlnets):
        return None  # no trident: the memory model traces Wan's own networks (`networks`, `estimate_memory`)

    def networks(self, model: ModelRef):
        from ..memory_vace import VACENetworks
        from ..pipelines.skeleton import local_folder

        reference = self.reference(model)
        folder = local_folder(reference)
        if folder is not None:
            return VACENetworks.from_folder(folder), None
        size = RELEASED_SIZES.get(reference, DEFAULT_SIZE)
        return VACENetworks.released(size), (f"the configs of model {model.path} are not on this computer: "
                                             f"estimated for the released Wan2.1-VACE {size}")

    def parts(self, model: ModelRef) -> list[Part]:
        reference = self.reference(model)
        return [Part(role, reference, needs=sub) for sub, role in ROLES.items()]


@dataclass(frozen=True)
class TinyWanVACE(WanFamily):
    """A random Wan2.1-VACE of the tiny geometry, built offline (the same weights every time)."""

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str, shift: float | None = None):
        from ..pipelines.loading import resolve_device
        from ..pipelines.pipeline_wan_vace import WanVACEEditPipeline
        from ..pipelines.tiny_wan import TINY_FLOW_SHIFT, cast_keeping_float32, tiny_wan_vace_parts

        self.check_structure(controlnets)
        device_ = resolve_device(device)
        parts = tiny_wan_vace_parts()
        parts["scheduler"] = flow_scheduler(scheduler, {"flow_shift": TINY_FLOW_SHIFT}, shift)
        pipe = WanVACEEditPipeline(**parts).to(device_)
        cast_keeping_float32(pipe.transformer, wan_dtype(dtype, device_))
        pipe.text_encoder.to(wan_dtype(dtype, device_))
        return pipe

    def skeleton(self, model: ModelRef, controlnets):
        return None

    def networks(self, model: ModelRef):
        from ..memory_vace import VACENetworks

        return VACENetworks.tiny(), None

    def parts(self, model: ModelRef) -> list[Part]:
        return [Part("model", model.path, built_in="a tiny random Wan2.1-VACE (transformer, causal VAE, UMT5)")]


def wan_dtype(dtype: str, device):
    """`auto` is bfloat16 on CUDA (Wan's training precision), float32 on the CPU."""
    import torch

    from ..pipelines.loading import resolve_dtype

    return torch.bfloat16 if dtype == "auto" and device.type == "cuda" else resolve_dtype(dtype, device)


def flow_scheduler(name: str, config, shift: float | None):
    """The flow-matching sampler `name` ("unipc", as Wan's folders ship it, or "euler") at the model's shift, or at
    `shift` (`sampling.shift`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from ..errors import UserError

    if name not in FLOW_SCHEDULERS:
        raise UserError(f"a Wan-VACE model samples by flow matching: set sampling.scheduler to one of "
                        f"{', '.join(FLOW_SCHEDULERS)} (got {name})")
    config = dict(config)
    shift = float(config.get("flow_shift", config.get("shift", DEFAULT_SHIFT))) if shift is None else float(shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    # The folder's own UniPC settings where it ships UniPC (Wan's releases do), flow matching in any case.
    own = config if config.get("_class_name") == UniPCMultistepScheduler.__name__ else {}
    return UniPCMultistepScheduler.from_config({**own, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                                "flow_shift": shift})


WAN_VACE = WanVACE(
    name="wan-vace", description="Wan2.1-VACE (video transformer; wan-vace is the 1.3B release, or model.path= a "
    "Wan-VACE folder or hub id)", conventions=WAN_VACE_CONVENTIONS, names=tuple(RELEASED),
)
TINY_WAN_VACE = TinyWanVACE(
    name="wan-vace-tiny", description="a tiny random Wan2.1-VACE, built offline (noise-like output)",
    conventions=WAN_VACE_CONVENTIONS, names=("wan-vace-tiny",), builtin=True,
    real_model="model.path=wan-vace (Wan2.1-VACE 1.3B; `ccedit models` lists its parts)",
)
