"""Model kinds: each family of video models in one module, registered here. Code outside `ccedit/kinds/` asks the
kind of a model reference (`kind_for`) for its loader, networks, parts, defaults and conventions, and never names a
family itself.

A new family is a module with a `ModelKind` subclass and one `register_kind` line below.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Conventions, ModelKind, ModelRef, Part
from .ccedit import CCEDIT, TINY
from .open_trident import OPEN_TRIDENT, TINY_OPEN_TRIDENT
from .wan_vace import TINY_WAN_VACE, WAN_VACE
from .registry import KINDS, builtin_models, kind_for, named_models, register_kind

__all__ = [
    "KINDS", "Conventions", "ModelKind", "ModelRef", "Part", "builtin_models", "estimate_memory", "kind_for",
    "load_pipeline", "model_skeleton", "named_models", "register_kind",
]

# Kinds that answer to names first; the kind that takes any folder or hub id last.
for _kind in (TINY, TINY_OPEN_TRIDENT, OPEN_TRIDENT, TINY_WAN_VACE, WAN_VACE, CCEDIT):
    register_kind(_kind)


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
    shift: float | None = None,
):
    """Build the `CCEditPipeline` of `model` with one ControlNet per entry of `controlnets`.

    Args:
        model (`str`): a named model (`named_models()`: the built-in tiny ones, `animatediff`), a folder written
            by `ccedit convert`, or a hub id with that layout.
        controlnets: per structure annotator, `None` for the model's own ControlNet, or a ControlNet path / hub id.
        tokenizer (`str`, *optional*): tokenizer path or hub id when the model has no `tokenizer/` folder.
        scheduler (`str`): a name from `ccedit.schedulers.SCHEDULERS`.
        dtype, device: `"auto"` picks float16 on CUDA and float32 on CPU.
        base (`str`, *optional*): a personalised SD-1.5 base replacing the model's frozen UNet (`personalise.py`);
            the kind refuses one of another family (`ModelKind.personalise`).
        loras: LoRAs (`LoraSpec`s or config entries `{path, scale}`) on the networks the kind's LoRAs are for.
        parts (`dict`, *optional*): for kinds assembled from parts (`animatediff`), each part's folder or hub id.
        shift (`float`, *optional*): a flow-matching model's shift instead of its own (`sampling.shift`).
    """
    reference = ModelRef(model, dict(parts or {}), tokenizer)
    kind = kind_for(model)
    if shift is not None and kind.conventions.prediction_type != "flow":
        from ..errors import UserError

        raise UserError(f"sampling.shift is a flow-matching model's setting; {model} predicts "
                        f"{kind.conventions.prediction_type}: leave sampling.shift unset")
    options = {} if shift is None else {"shift": shift}
    pipe = kind.load(reference, list(controlnets), scheduler, dtype, device, **options)
    if base is not None or loras:
        kind.personalise(pipe, base, loras, fuse_lora)
    return pipe


def model_skeleton(model: str, controlnets: Sequence[str | None] = (None,), parts: dict | None = None):
    """The networks `load_pipeline(model, controlnets=..., parts=...)` would build, on the meta device
    (`pipelines.skeleton.NetworkSkeleton`); None when their configs are not on this computer (a hub id that is
    not in the local cache)."""
    return kind_for(model).skeleton(ModelRef(model, dict(parts or {})), list(controlnets))


def estimate_memory(model: str, controlnets: Sequence[str | None] = (None,), parts: dict | None = None, **settings):
    """The memory model's estimate (`memory.MemoryEstimate`) of an edit with `model` under `settings`: the kind
    decides how its networks are traced (`ModelKind.estimate_memory`)."""
    return kind_for(model).estimate_memory(ModelRef(model, dict(parts or {})), list(controlnets), **settings)
