"""The trident: main branch, structure branch (ControlNets on every frame) and appearance branch (keyframe)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

from .appearance import AppearanceEncoder
from .residuals import BranchResiduals
from .side_branches import AppearanceBranch, AppearanceCondition, BranchCall, appearance_branch, route
from .structure_branch import ControlNetStructure, StructureCondition
from .temporal_adapter import CCEditTemporalAdapter
from .video_unet import VideoUNet


def trained_parts(roles: Sequence[str], appearance: bool = True) -> list[str]:
    """The model sub-folders that training `roles` changes: `temporal/` (for `temporal` or `cross_frame`: the adapter
    holds both) and `appearance/` (when the model has one)."""
    parts = ["temporal"] if {"temporal", "cross_frame"} & set(roles) else []
    return parts + (["appearance"] if appearance and "appearance" in roles else [])


class TridentModel(nn.Module):
    r"""CCEdit's trident network (ref §2): `VideoUNet` + per-frame ControlNets + keyframe `AppearanceEncoder`.

    The parts are built objects, not configs, so any compatible ones can be composed: several ControlNets (one
    scale each), or none; an appearance encoder, or none (text-only editing).

    Args:
        main (`VideoUNet`): the temporal main branch.
        structure (`Sequence[ControlNetModel]`): structure ControlNets, each fed its own maps of every frame.
        appearance (`AppearanceEncoder`, *optional*): the keyframe encoder.
    """

    def __init__(
        self,
        main: VideoUNet,
        structure: Sequence[ControlNetModel] = (),
        appearance: AppearanceEncoder | None = None,
    ):
        super().__init__()
        self.main = main
        self.structure = nn.ModuleList(structure)
        self.appearance = appearance

    @property
    def appearance_branch(self) -> AppearanceBranch | None:
        """The adapter the appearance network is routed through (`side_branches.py`): made on each use, a light
        wrapper, so it always routes the network the trident holds now."""
        return appearance_branch(self.appearance)

    @property
    def dtype(self) -> torch.dtype:
        return self.main.dtype

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None) -> "TridentModel":
        """Load the networks of a ccedit model folder: `unet/`, `temporal/`, and `controlnet/`, `appearance/` if present."""
        folder = Path(folder)
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs)
        temporal = CCEditTemporalAdapter.from_pretrained(folder, subfolder="temporal", **kwargs)
        structure = [ControlNetModel.from_pretrained(folder, subfolder="controlnet", **kwargs)] if (folder / "controlnet").is_dir() else []
        appearance = AppearanceEncoder.from_pretrained(folder, subfolder="appearance", **kwargs) if (folder / "appearance").is_dir() else None
        return cls(VideoUNet(unet, temporal), structure, appearance).eval()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Save each network to its sub-folder (`controlnet/`, then `controlnet_1/`, ... for extra ControlNets)."""
        folder = Path(folder)
        self.main.unet.save_pretrained(folder / "unet")
        self.main.temporal.save_pretrained(folder / "temporal")
        for i, net in enumerate(self.structure):
            net.save_pretrained(folder / ("controlnet" if i == 0 else f"controlnet_{i}"))
        if self.appearance is not None:
            self.appearance.save_pretrained(folder / "appearance")

    def named_parameters_by_role(self) -> dict[str, dict[str, nn.Parameter]]:
        """The learnable parameters by role: `temporal`, `cross_frame` (of the main branch) and `appearance`.

        Names are those of `self.named_parameters()`. The image UNet and the ControlNets belong to no role: they
        are the frozen public parts.
        """
        roles = {role: {f"main.{k}": p for k, p in params.items()} for role, params in self.main.named_parameters_by_role().items()}
        roles["appearance"] = dict(self.appearance.named_parameters(prefix="appearance")) if self.appearance else {}
        return roles

    def set_trainable(self, roles: Sequence[str]) -> list[nn.Parameter]:
        """Freeze everything but the parameters of `roles`; returns those, in a fixed order, for the optimiser."""
        available = self.named_parameters_by_role()
        unknown = [r for r in roles if r not in available]
        if unknown:
            raise ValueError(f"unknown parameter roles {unknown}; choose from {sorted(available)}")
        empty = [r for r in roles if not available[r]]
        if empty:
            raise ValueError(f"this model has no {empty[0]} parameters to train")
        self.requires_grad_(False)
        trainable = [p for r in roles for p in available[r].values()]
        for p in trainable:
            p.requires_grad_(True)
        return trainable

    def save_trained(self, folder: str | os.PathLike, roles: Sequence[str]) -> list[str]:
        """Write only the parts that `roles` train, as the sub-folders a ccedit model folder holds.

        `temporal/` (for `temporal` or `cross_frame`: the adapter holds both) and `appearance/`; returns their names.
        """
        folder = Path(folder)
        written = trained_parts(roles, appearance=self.appearance is not None)
        for part in written:
            if part == "temporal":
                self.main.save_temporal(folder / "temporal")
            else:
                self.appearance.save_pretrained(folder / "appearance")
        return written

    def load_trained(self, folder: str | os.PathLike, roles: Sequence[str]) -> None:
        """Copy the parts that `save_trained(folder, roles)` wrote into these networks, in place (so an optimiser
        over their parameters goes on with them)."""
        folder = Path(folder)
        for part in trained_parts(roles, appearance=self.appearance is not None):
            if part == "temporal":
                self.main.load_temporal(folder / "temporal")
            else:
                trained = type(self.appearance).from_pretrained(folder / "appearance")
                self.appearance.load_state_dict(trained.state_dict())

    @property
    def structure_branch(self) -> ControlNetStructure:
        """The adapter the ControlNets are routed through (`structure_branch.py`), made on each use like
        `appearance_branch`."""
        return ControlNetStructure(self.structure)

    @property
    def hints_can_be_encoded(self) -> bool:
        """Whether `encode_structure` serves every ControlNet (forward flips a BGR one's input after the point where
        an encoding would go in)."""
        return self.structure_branch.hints_can_be_encoded

    def encode_structure(self, structure_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each ControlNet's hint encoding of its maps: `(b, 3, t, H, W)` -> `(b, C, t, h, w)` at latent size.

        The encoding depends on the maps alone (not on the timestep, the noisy latent or the text), so a caller runs
        it once per clip and passes the result as `structure_hints` to every network call.
        """
        return self.structure_branch.encode(structure_maps, self.dtype)

    def structure_residuals(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
        structure_maps: Sequence[torch.Tensor], structure_scales: Sequence[float], encoded: bool = False,
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        """Sum of the ControlNets' residuals for every frame, `(batch * frames, C, h, w)`; `(None, None)` if unused
        (`ControlNetStructure.residuals`)."""
        return self.structure_branch.residuals(sample, timestep, encoder_hidden_states, structure_maps,
                                               structure_scales, encoded)

    def appearance_residuals(
        self, keyframe_latents: torch.Tensor, timestep: torch.Tensor, frames: Sequence[int], scale: float = 1.0
    ) -> BranchResiduals:
        """Run the appearance branch once on `(keyframes, 4, h, w)` latents at one timestep, for every sample.

        Residuals depend only on the keyframe and the timestep, so a caller computes them once per timestep and
        passes them to every window and both guidance halves (`forward(..., appearance=...)`).
        """
        return self.appearance_residuals_at(keyframe_latents, [timestep], frames, scale)[0]

    def appearance_residuals_at(
        self, keyframe_latents: torch.Tensor, timesteps: Sequence[torch.Tensor | float], frames: Sequence[int],
        scale: float = 1.0,
    ) -> list[BranchResiduals]:
        """`appearance_residuals` at each of `timesteps`, from one run of the branch on a row per timestep and keyframe.

        (`AppearanceBranch.residuals_at`: for branches whose residuals depend on the keyframes and timestep alone.)
        """
        return self._appearance_branch().residuals_at(keyframe_latents, timesteps, frames, scale)

    @property
    def appearance_per_timestep(self) -> bool:
        """Whether the appearance branch depends on the keyframes and the timestep alone (CCEdit's encoder), so its
        residuals serve every window and guidance half of a timestep; SparseCtrl also reads the noisy latent."""
        branch = self.appearance_branch
        return branch is not None and branch.per_timestep

    @property
    def centres_keyframes(self) -> bool:
        """Whether each keyframe needs a window centred on it: CCEdit's encoder was trained with the keyframe at the
        window's centre; SparseCtrl takes conditioning frames at any position, so plain windows carry the keyframes
        where they are (as diffusers' SparseCtrl pipeline places them)."""
        branch = self.appearance_branch
        return branch is not None and branch.centres_keyframes

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *,
        structure_maps: Sequence[torch.Tensor] | torch.Tensor | None = None,
        structure_scale: Sequence[float] | float = 1.0,
        structure_hints: Sequence[torch.Tensor] | None = None,
        keyframe_latent: torch.Tensor | None = None,
        keyframe_index: int | None = None,
        appearance_scale: float = 1.0,
        appearance: BranchResiduals | None = None,
        appearance_condition: tuple[torch.Tensor, Sequence[int]] | None = None,
        anchor_index: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Predict the noise of a video latent.

        Args:
            sample (`torch.Tensor`): noisy latents `(batch, 4, frames, height, width)`.
            timestep (`torch.Tensor`): `(batch,)` or a scalar.
            encoder_hidden_states (`torch.Tensor`): text embeddings `(batch, tokens, dim)`.
            structure_maps (`torch.Tensor` or list): per ControlNet, maps `(batch, 3, frames, 8*height, 8*width)` in
                `[0, 1]` as a diffusers ControlNet expects them.
            structure_scale (`float` or list): one scale per ControlNet; 0 skips that ControlNet.
            structure_hints (list, *optional*): instead of `structure_maps`, their encodings from
                `encode_structure` (`(batch, C, frames, height, width)` per ControlNet), computed once per clip.
            keyframe_latent (`torch.Tensor`, *optional*): one edited keyframe's scaled latent per sample,
                `(batch, 4, h, w)`, encoded here. Without it (or `appearance`), or with `appearance_scale=0`, the
                appearance branch does not run.
            keyframe_index (`int`, *optional*): the frame `keyframe_latent` shows; defaults to the centre frame.
            appearance_scale (`float`): scale of the appearance residuals computed from `keyframe_latent`.
            appearance (`BranchResiduals`, *optional*): appearance residuals computed beforehand
                (`appearance_residuals`), for any number of keyframes at any frames; excludes `keyframe_latent`.
            appearance_condition (`tuple`, *optional*): for an appearance branch that reads the noisy latent
                (SparseCtrl): keyframe latents `(batch or 1, keyframes, 4, h, w)` and the window frames they show.
            anchor_index (`int` or `torch.Tensor`, *optional*): the cross-frame attention anchor, one frame or one
                per sample. Defaults to the appearance target nearest the centre while the appearance branch runs,
                else the centre frame: a keyframe that does not act moves nothing.

        Returns:
            `torch.Tensor`: predicted noise, same shape as `sample`.
        """
        call = BranchCall(sample, timestep, encoder_hidden_states)
        structure = StructureCondition(structure_maps, structure_hints, structure_scale)
        appearance = AppearanceCondition(keyframe_latent, keyframe_index, appearance, appearance_condition,
                                         appearance_scale)
        contributions = [*self.structure_branch.contributions(call, structure),
                         *self._appearance_contributions(call, appearance)]
        routed = route(contributions, call.num_frames, anchor_index)
        return self.main(sample, timestep, encoder_hidden_states, residuals=routed.residuals,
                         anchor_index=routed.anchor_index, **routed.inputs)

    def _appearance_contributions(self, call: BranchCall, condition: AppearanceCondition) -> list:
        if not condition.acts:
            return []
        return self._appearance_branch().contributions(call, condition)

    def _appearance_branch(self) -> AppearanceBranch:
        if self.appearance_branch is None:
            raise ValueError("a keyframe was given but this model has no appearance branch")
        return self.appearance_branch


# Main branches by the type of their temporal layers: another kind of temporal layers (AnimateDiff's motion
# modules) plugs in by registering how to build its main branch; pipelines never name a main branch class.
MAIN_BRANCHES: dict[type, "Callable[[UNet2DConditionModel, nn.Module], nn.Module]"] = {CCEditTemporalAdapter: VideoUNet}


def register_main_branch(temporal_class: type, build: "Callable[[UNet2DConditionModel, nn.Module], nn.Module]") -> None:
    """Make `build_trident` build `build(unet, temporal)` as the main branch for temporal layers of that class."""
    MAIN_BRANCHES[temporal_class] = build


def build_trident(
    unet: UNet2DConditionModel, temporal: nn.Module, structure: Sequence[ControlNetModel] = (),
    appearance: nn.Module | None = None,
) -> TridentModel:
    """A `TridentModel` from a frozen base UNet, its temporal layers (which choose the main branch) and side branches."""
    for temporal_class, build in MAIN_BRANCHES.items():
        if isinstance(temporal, temporal_class):
            return TridentModel(build(unet, temporal), structure, appearance)
    known = ", ".join(c.__name__ for c in MAIN_BRANCHES)
    raise ValueError(f"no main branch is registered for temporal layers of type {type(temporal).__name__} (known: {known})")


def _register_motion_main_branch() -> None:
    from diffusers import MotionAdapter

    from .motion import build_motion_main_branch

    register_main_branch(MotionAdapter, build_motion_main_branch)


_register_motion_main_branch()
