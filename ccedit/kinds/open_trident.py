"""The open trident: an SD-1.5 base with AnimateDiff motion modules (main branch), SD-1.5 ControlNets (structure)
and SparseCtrl-RGB (appearance), each part a local folder or hub id; and `animatediff-tiny`, a random one built
offline. Sampled the diffusers way (its own timestep spacing, DDIM by default)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Conventions, ModelKind, ModelRef, Part

# AnimateDiff's motion modules were trained on 16-frame clips.
# SparseCtrl takes its keyframes at any window position.
OPEN_TRIDENT_CONVENTIONS = Conventions(native_frames=16, scheduler="ddim", sampling_convention="diffusers",
                                       centred_keyframes=False)

# The parts (`model.parts.<name>`), each a local folder or a hub id: what it holds, its role and its name in errors.
PARTS = {
    "base": "an SD-1.5 model in diffusers format (unet/, vae/, text_encoder/, tokenizer/)",
    "motion_adapter": "AnimateDiff motion modules (diffusers MotionAdapter)",
    "controlnet": "the structure ControlNet (SD-1.5)",
    "sparsectrl": "SparseCtrl-RGB, the appearance branch (optional: null for text-guided edits only)",
}
REQUIRED_PARTS = ("base", "motion_adapter", "controlnet")
ROLES = {"base": "main branch: SD-1.5 base", "motion_adapter": "main branch: AnimateDiff motion modules",
         "controlnet": "structure branch: ControlNet", "sparsectrl": "appearance branch: SparseCtrl-RGB"}
PART_NAMES = {"base": "base model", "motion_adapter": "motion adapter", "controlnet": "ControlNet",
              "sparsectrl": "SparseCtrl"}


def _networks() -> dict:
    """Each network: its class, the part that holds it and the subfolder there."""
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, SparseControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    return {
        "unet": (UNet2DConditionModel, "base", "unet"), "vae": (AutoencoderKL, "base", "vae"),
        "text_encoder": (CLIPTextModel, "base", "text_encoder"), "temporal": (MotionAdapter, "motion_adapter", None),
        "controlnet": (ControlNetModel, "controlnet", None), "appearance": (SparseControlNetModel, "sparsectrl", None),
    }


def part_folders(parts: dict):
    """The local folder of each configured part, a missing or unknown one refused in one line that names its
    setting (`model.parts.base=DIR`)."""
    from ..errors import ModelNotFoundError
    from ..pipelines.model_folders import resolve_model_folder

    unknown = set(parts) - set(PARTS)
    missing = [p for p in REQUIRED_PARTS if not parts.get(p)]
    if unknown or missing:
        raise ModelNotFoundError(
            f"model.parts {'lacks ' + ', '.join(missing) if missing else 'has unknown ' + ', '.join(sorted(unknown))}: "
            + "; ".join(f"{k}: {v}" for k, v in PARTS.items())
        )
    return {part: resolve_model_folder(str(parts[part]), PART_NAMES[part], f"model.parts.{part}=DIR")
            for part in PARTS if parts.get(part)}


@dataclass(frozen=True)
class OpenTrident(ModelKind):
    def check(self, model: ModelRef) -> None:
        part_folders(model.parts)

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str):
        from ..hub import load_tokenizer
        from ..pipelines.loading import resolve_device, resolve_dtype
        from ..pipelines.model_folders import load_component, resolve_model_folder
        from ..pipelines.pipeline_ccedit import CCEditPipeline
        from ..schedulers import build_scheduler

        device_ = resolve_device(device)
        dtype_ = resolve_dtype(dtype, device_)
        cls = {name: entry[0] for name, entry in _networks().items()}
        folders = part_folders(model.parts)
        base, adapter_path, own_net = (str(folders[p]) for p in REQUIRED_PARTS)
        kwargs = dict(torch_dtype=dtype_)
        nets = [
            load_component(cls["controlnet"], own_net if c is None else str(
                resolve_model_folder(c, "ControlNet", "structure.controlnets=[..., DIR]")), None, "ControlNet", **kwargs)
            for c in controlnets
        ]
        sparse = None
        if "sparsectrl" in folders:
            sparse = load_component(cls["appearance"], str(folders["sparsectrl"]), None, "SparseCtrl appearance branch",
                                    **kwargs)
        pipe = CCEditPipeline(
            vae=load_component(cls["vae"], base, "vae", "VAE", **kwargs),
            text_encoder=load_component(cls["text_encoder"], base, "text_encoder", "text encoder", dtype=dtype_,
                                        trust_remote_code=False),
            tokenizer=load_tokenizer(base),
            unet=load_component(cls["unet"], base, "unet", "base UNet", **kwargs),
            temporal=load_component(cls["temporal"], adapter_path, None, "motion adapter", **kwargs),
            controlnet=nets, scheduler=build_scheduler(scheduler), appearance=sparse,
            sampling_convention=self.conventions.sampling_convention,
        )
        return pipe.to(device_)

    def skeleton(self, model: ModelRef, controlnets):
        from ..pipelines.skeleton import NetworkSkeleton, from_config, local_folder, structure_skeletons

        folders = {name: local_folder(model.parts.get(name)) for name in REQUIRED_PARTS}
        if None in folders.values():
            return None
        networks = _networks()
        nets = {name: from_config(cls, folders[part] / sub if sub else folders[part])
                for name, (cls, part, sub) in networks.items() if name != "appearance"}
        sparse = local_folder(model.parts.get("sparsectrl"))
        appearance = from_config(networks["appearance"][0], sparse) if sparse else None
        return NetworkSkeleton(nets["unet"], nets["temporal"], structure_skeletons(nets["controlnet"], controlnets),
                               appearance, nets["vae"], nets["text_encoder"])

    def parts(self, model: ModelRef) -> list[Part]:
        return [Part(role, str(model.parts[key]) if model.parts.get(key) else None) for key, role in ROLES.items()]


@dataclass(frozen=True)
class TinyOpenTrident(ModelKind):
    """A random open trident on the tiny geometry, built offline (the same weights every time)."""

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str):
        from ..pipelines.tiny import tiny_animatediff_components
        from .ccedit import build_tiny

        return build_tiny(tiny_animatediff_components(), controlnets, scheduler, dtype, device)

    def skeleton(self, model: ModelRef, controlnets):
        from torch import nn

        from ..pipelines.skeleton import NetworkSkeleton, structure_skeletons
        from ..pipelines.tiny import tiny_animatediff_components

        # tiny random networks: built for real (a fraction of a second), then dropped to the meta device
        c = {k: v.to("meta") if isinstance(v, nn.Module) else v for k, v in tiny_animatediff_components().items()}
        return NetworkSkeleton(c["unet"], c["temporal"], structure_skeletons(c["controlnet"], [None] * len(controlnets)),
                               c["appearance"], c["vae"], c["text_encoder"])

    def parts(self, model: ModelRef) -> list[Part]:
        return [Part("model", model.path, built_in="a tiny random open trident (AnimateDiff + ControlNet + SparseCtrl)")]


OPEN_TRIDENT = OpenTrident(
    name="animatediff", description="the open trident: SD-1.5 + AnimateDiff + ControlNet + SparseCtrl-RGB, from "
    "its parts (model.parts)", conventions=OPEN_TRIDENT_CONVENTIONS, names=("animatediff",),
)
TINY_OPEN_TRIDENT = TinyOpenTrident(
    name="animatediff-tiny", description="a tiny random open trident, built offline (noise-like output)",
    conventions=OPEN_TRIDENT_CONVENTIONS, names=("animatediff-tiny",), builtin=True,
    real_model="model.path=animatediff (the open trident; `ccedit models` lists its parts)",
)
