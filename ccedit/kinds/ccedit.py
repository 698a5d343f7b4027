"""CCEdit's trident: a converted model folder (`ccedit convert`) or hub id with that layout, and `tiny`, a random
one built offline in the same architecture."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .base import Conventions, ModelKind, ModelRef, Part
from .registry import named_models

# The released model was trained on 17-frame windows and sampled with the original sigma table.
CCEDIT_CONVENTIONS = Conventions(native_frames=17, scheduler="dpmpp_2s_ancestral", sampling_convention="ccedit")
DEPTH_SUBFOLDER = "depth_estimator"  # the depth estimator `ccedit convert` writes beside the networks
HOW_TO_MAKE = "ccedit convert CKPT --out {model}"

# The network of each subfolder of a converted model, in trident roles (the order `ccedit models` lists them).
ROLES = {
    "unet": "main branch: SD-1.5 base", "temporal": "main branch: CCEdit temporal layers",
    "controlnet": "structure branch: ControlNet", "appearance": "appearance branch: keyframe encoder",
    DEPTH_SUBFOLDER: "structure maps: depth estimator",
}


def _network_classes() -> dict:
    """The class of each network of a model folder, by subfolder."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    from ..models import AppearanceEncoder, CCEditTemporalAdapter

    return {"unet": UNet2DConditionModel, "temporal": CCEditTemporalAdapter, "controlnet": ControlNetModel,
            "vae": AutoencoderKL, "text_encoder": CLIPTextModel, "appearance": AppearanceEncoder}


def _controlnet_folder(reference: str) -> str:
    from ..pipelines.model_folders import resolve_model_folder

    return str(resolve_model_folder(reference, "ControlNet", "structure.controlnets=[..., DIR]"))


@dataclass(frozen=True)
class ConvertedCCEdit(ModelKind):
    """Any folder or hub id in the layout `ccedit convert` writes."""

    def check(self, model: ModelRef) -> None:
        self._folder(model)

    def _folder(self, model: ModelRef) -> Path:
        from ..pipelines.model_folders import check_model_folder, how_to_make, resolve_model_folder

        hint = how_to_make(model.path, named_models())
        return check_model_folder(model.path, resolve_model_folder(model.path, hint=hint))

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str):
        from ..errors import ModelNotFoundError
        from ..hub import load_tokenizer
        from ..pipelines.loading import resolve_device, resolve_dtype
        from ..pipelines.model_folders import load_component
        from ..pipelines.pipeline_ccedit import CCEditPipeline
        from ..schedulers import build_scheduler

        folder = self._folder(model)
        device_ = resolve_device(device)
        path, cls, kwargs = str(folder), _network_classes(), dict(torch_dtype=resolve_dtype(dtype, device_))
        # transformers classes take `trust_remote_code`: never run code shipped in a model folder. (diffusers' model
        # classes have no such option; they only ever build their own class.)
        text_encoder = load_component(cls["text_encoder"], path, "text_encoder", "text encoder",
                                      dtype=kwargs["torch_dtype"], trust_remote_code=False)
        appearance = (load_component(cls["appearance"], path, "appearance", "appearance encoder", **kwargs)
                      if (folder / "appearance").is_dir() else None)
        nets = [load_component(cls["controlnet"], path, "controlnet", "ControlNet", **kwargs) if c is None
                else load_component(cls["controlnet"], _controlnet_folder(c), None, "ControlNet", **kwargs)
                for c in controlnets]
        if model.tokenizer is None and not (folder / "tokenizer").is_dir():
            raise ModelNotFoundError(
                f"{folder} has no tokenizer/: pass model.tokenizer=<path or hub id of an SD-1.5 tokenizer>")
        pipe = CCEditPipeline(
            vae=load_component(cls["vae"], path, "vae", "VAE", **kwargs), text_encoder=text_encoder,
            tokenizer=load_tokenizer(model.tokenizer or path),
            unet=load_component(cls["unet"], path, "unet", "base UNet", **kwargs),
            temporal=load_component(cls["temporal"], path, "temporal", "temporal layers", **kwargs),
            controlnet=nets, scheduler=build_scheduler(scheduler), appearance=appearance,
        )
        return pipe.to(device_)

    def skeleton(self, model: ModelRef, controlnets):
        from ..pipelines.model_folders import check_model_folder
        from ..pipelines.skeleton import NetworkSkeleton, from_config, local_folder, structure_skeletons

        folder = local_folder(model.path)
        if folder is None:
            return None
        check_model_folder(model.path, folder)
        cls = _network_classes()
        nets = {name: from_config(cls[name], folder / name)
                for name in ("unet", "temporal", "controlnet", "vae", "text_encoder")}
        appearance = from_config(cls["appearance"], folder / "appearance") if (folder / "appearance").is_dir() else None
        return NetworkSkeleton(nets["unet"], nets["temporal"], structure_skeletons(nets["controlnet"], controlnets),
                               appearance, nets["vae"], nets["text_encoder"])

    def parts(self, model: ModelRef) -> list[Part]:
        make = HOW_TO_MAKE.format(model=model.path)
        return [Part(role, model.path, needs=sub, make=make) for sub, role in ROLES.items()]

    def depth_estimator(self, model: ModelRef) -> str | None:
        folder = Path(model.path).expanduser() / DEPTH_SUBFOLDER
        return str(folder) if folder.is_dir() else None


@dataclass(frozen=True)
class TinyCCEdit(ModelKind):
    """A random CCEdit trident of the tiny geometry, built offline (the same weights every time)."""

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str):
        from ..pipelines.tiny import tiny_components

        return build_tiny(tiny_components(keyframe=True), controlnets, scheduler, dtype, device)

    def skeleton(self, model: ModelRef, controlnets):
        from ..pipelines.skeleton import geometry_skeleton

        return geometry_skeleton("tiny", keyframe=True, num_controlnets=len(controlnets))

    def parts(self, model: ModelRef) -> list[Part]:
        return [Part("model", model.path, built_in="a tiny random CCEdit trident")]


def build_tiny(components: dict, controlnets, scheduler: str, dtype: str, device: str):
    """A pipeline of tiny random `components`, with another tiny random ControlNet for each extra annotator."""
    import torch

    from ..pipelines.loading import resolve_device, resolve_dtype
    from ..pipelines.pipeline_ccedit import CCEditPipeline
    from ..pipelines.tiny import tiny_controlnet
    from ..schedulers import build_scheduler

    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    components["controlnet"] = [components["controlnet"] if c is None else tiny_controlnet(seed=i)
                                for i, c in enumerate(controlnets)]
    components["scheduler"] = build_scheduler(scheduler)
    pipe = CCEditPipeline(**components).to(device_)
    # Casting float32 to float32 would only make diffusers warn about modules that must stay float32.
    return pipe.to(dtype=dtype_) if dtype_ != torch.float32 else pipe


CCEDIT = ConvertedCCEdit(
    name="ccedit", description="a converted CCEdit model folder (`ccedit convert`) or a hub id with that layout",
    conventions=CCEDIT_CONVENTIONS, folders=True,
)
TINY = TinyCCEdit(
    name="tiny", description="a tiny random CCEdit trident, built offline (noise-like output: checks an install)",
    conventions=replace(CCEDIT_CONVENTIONS, native_frames=16), names=("tiny",), builtin=True,
    real_model="model.path=DIR (a converted CCEdit model)",
)
