"""What a model kind is: one family of video models (its loader, its networks on the meta device for the memory
model, its parts for `ccedit models`, its default settings and its conventions), so that nothing outside
`ccedit/kinds/` needs to know which family it is running.

This module is torch-free: the settings loader reads a kind's defaults before any heavy import. A kind imports
its networks and pipelines inside the methods that build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Conventions:
    """How a kind's main branch was trained and is sampled: facts of the family, not user settings."""

    native_frames: int  # the window length (in pixel frames) the main branch was trained on
    size_multiple: int = 8  # frame sides are multiples of this (the VAE's spatial factor)
    latent_time_factor: int = 1  # pixel frames per latent frame (1: one latent per frame, as in SD-1.5 UNets)
    prediction_type: str = "epsilon"  # what the main branch predicts: epsilon, v_prediction or flow
    scheduler: str = "dpmpp_2s_ancestral"  # the default sampler
    sampling_convention: str = "ccedit"  # "ccedit": the original sigma table and timesteps; "diffusers": its own
    centred_keyframes: bool = True  # each keyframe needs a window centred on it (its appearance branch's training)
    anchor_prior: bool = True  # CCEdit's anchor prior applies (`sampling.prior=auto`); not to flow matching
    reference_images: bool = False  # the model takes reference images beside the clip (`sampling.references`)


@dataclass(frozen=True)
class ModelRef:
    """Which model to build: the `model` settings a kind reads (`config.ModelConfig` has these fields)."""

    path: str  # the kind's name, or a folder / hub id
    parts: dict[str, Any] = field(default_factory=dict)  # kinds assembled from parts: each part's folder or hub id
    tokenizer: str | None = None  # when the model folder has none

    @classmethod
    def of(cls, settings) -> ModelRef:
        return cls(settings.path, dict(settings.parts or {}), settings.tokenizer)


@dataclass(frozen=True)
class Part:
    """One part of a model as `ccedit models` lists it (`catalog.py` says where it comes from on this machine)."""

    role: str  # what the part does in the trident
    reference: str | None  # the folder or hub id as configured; None: not configured
    needs: str = ""  # the path inside `reference` that holds this part
    make: str = ""  # the command that makes the folder when it is missing
    built_in: str = ""  # a built-in random part: what it is (nothing is looked up)


@dataclass(frozen=True)
class ModelKind:
    """A family of models. `names` are the model references the kind answers to by name (`tiny`, `animatediff`);
    a kind with `folders=True` also takes any other folder or hub id (the converted CCEdit layout). Subclasses
    implement the methods that need the family's networks."""

    name: str
    description: str  # one line for `ccedit models` and --help
    conventions: Conventions
    names: tuple[str, ...] = ()
    folders: bool = False
    builtin: bool = False  # random weights built offline: checks an install, output noise-like
    defaults: dict[str, Any] = field(default_factory=dict)  # the kind's settings layer, under the user's
    real_model: str = ""  # builtin kinds: what to pass instead for real edits

    def claims(self, model: str) -> bool:
        return model in self.names

    def settings(self) -> dict[str, Any]:
        """The kind's conventions as the edit settings they decide: the layer an edit's settings start from (the
        kind's settings file, then the user's, override it)."""
        c = self.conventions
        return {"model": {"native_frames": c.native_frames, "size_multiple": c.size_multiple},
                "sampling": {"scheduler": c.scheduler}}

    # What a kind provides. `controlnets` has one entry per structure annotator (None: the model's own ControlNet).

    def check_structure(self, controlnets: list) -> None:
        """Refuse, in one line, structure settings the kind cannot take: `controlnets` has one entry per annotator
        (None: the model's own ControlNet, which serves one annotator)."""
        from ..errors import UserError

        if controlnets.count(None) > 1:
            raise UserError(
                f"{len(controlnets)} structure annotators need {len(controlnets)} ControlNets but the model has one: "
                "add the others with structure.controlnets=[null,<path or hub id>]"
            )

    def check(self, model: ModelRef) -> None:
        """Refuse, in one line and before any frame is decoded, a model whose parts cannot be found."""

    def load(self, model: ModelRef, controlnets, scheduler: str, dtype: str, device: str):
        """The kind's `CCEditPipeline`, on `device` in `dtype` (names: "auto" picks float16 on CUDA)."""
        raise NotImplementedError

    def skeleton(self, model: ModelRef, controlnets):
        """The networks `load` would build, on the meta device (`pipelines.skeleton.NetworkSkeleton`); None when
        their configs are not on this computer."""
        raise NotImplementedError

    def main_dtype(self, dtype: str, device):
        """The precision the kind loads its main networks in for the `model.dtype` setting `dtype` on `device`
        (`auto`: float16 on CUDA, float32 on the CPU)."""
        from ..pipelines.loading import resolve_dtype

        return resolve_dtype(dtype, device)

    def estimate_memory(self, model: ModelRef, controlnets, **settings):
        """The memory model's estimate of an edit with this model (`memory.MemoryEstimate`), under `settings` (those
        of `memory.estimate_edit_memory`). By default a trace of the networks `skeleton` builds, or of CCEdit's
        released size when their configs are not on this computer (nothing is fetched for an estimate)."""
        from ..memory import estimate_edit_memory

        networks = self.skeleton(model, controlnets)
        estimate = estimate_edit_memory(**settings, num_controlnets=len(controlnets), networks=networks)
        if networks is None:
            estimate.notes.append(f"the configs of model {model.path} are not on this computer: estimated for "
                                  "CCEdit's released size (SD-1.5)")
        return estimate

    def parts(self, model: ModelRef) -> list[Part]:
        """The kind's own parts, in trident roles, for `ccedit models`."""
        raise NotImplementedError

    def personalise(self, pipe, base: str | None, loras, fuse: bool) -> None:
        """Put a personalised `base` and `loras` (config entries or `LoraSpec`s) on the loaded `pipe`, folded into the
        weights when `fuse`; a base or LoRA of another family is refused in one line. By default the SD-1.5 UNet's
        (`pipelines.personalise`)."""
        from ..pipelines.personalise import personalise

        personalise(pipe, base, loras, fuse=fuse)

    def depth_estimator(self, model: ModelRef) -> str | None:
        """The kind's own depth estimator (the `depth` annotator's weights), when it ships one."""
        return None
