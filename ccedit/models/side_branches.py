"""One side-branch protocol: a side branch turns (sample, timestep, text, its condition) into its contribution to
one call of the main branch, either residuals (`BranchResiduals`, which the main branch adds) or inputs the main
branch consumes itself (`MainInputs`, keyword arguments of its call: VACE's control hidden states).

A main branch's owner (`TridentModel`, `vace_denoiser.window_prediction`) asks each of its side branches for their
contributions and hands them over through `route`, so it never asks which networks it holds. The adapters:
`structure_branch.ControlNetStructure` (ControlNets), `KeyframeEncoderBranch` (CCEdit's keyframe encoder),
`SparseControlBranch` (SparseCtrl) and `VACEContext` (VACE's context). Appearance adapters are registered by the
class of their network: a new appearance branch is an adapter class and one `register_appearance_branch` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import torch
from torch import nn

from .appearance import AppearanceEncoder
from .centre import centre_frame, nearest_centre
from .residuals import BranchResiduals


@dataclass(frozen=True)
class BranchCall:
    """What every side branch sees of one main-branch call: the noisy `sample` `(batch, channels, frames, h, w)`,
    the `timestep` (`(batch,)` or a scalar) and the `text` embeddings `(batch, tokens, dim)`."""

    sample: torch.Tensor
    timestep: torch.Tensor
    text: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.sample.shape[2]


@dataclass(frozen=True)
class MainInputs:
    """Inputs the main branch consumes itself, passed as keyword arguments of its call."""

    kwargs: dict[str, Any]


Contribution = Union[BranchResiduals, MainInputs]


class SideBranch:
    """A side branch's adapter: its contributions to one call of the main branch, from the call and its condition
    (none when the condition asks for nothing)."""

    def contributions(self, call: BranchCall, condition) -> list[Contribution]:
        raise NotImplementedError


@dataclass(frozen=True)
class Routed:
    """What the main branch gets of its side branches' contributions: the residuals in the order it adds them, the
    inputs it consumes, and the cross-frame anchor (given, else the targeted frame nearest the window's centre)."""

    residuals: list[BranchResiduals] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    anchor_index: int | torch.Tensor | None = None


def route(contributions: Sequence[Contribution], num_frames: int,
          anchor_index: int | torch.Tensor | None = None) -> Routed:
    """Sort contributions into residuals and main inputs, checked against an `num_frames`-frame window.

    Residuals into the stream go first: the original adds appearance before structure into the middle output.
    """
    residuals = [c for c in contributions if isinstance(c, BranchResiduals)]
    residuals = [r for r in residuals if r.into == "stream"] + [r for r in residuals if r.into != "stream"]
    targets = sorted({frame for r in residuals for frame in (r.frames or ())})
    if any(not 0 <= frame < num_frames for frame in targets):
        raise ValueError(f"side-branch residuals aimed at frames {targets} of a {num_frames}-frame window")
    if anchor_index is None and targets:
        anchor_index = nearest_centre(targets, num_frames)
    inputs: dict[str, Any] = {}
    for given in (c for c in contributions if isinstance(c, MainInputs)):
        twice = sorted(set(inputs) & set(given.kwargs))
        if twice:
            raise ValueError(f"two side branches give the main branch's {twice[0]}")
        inputs.update(given.kwargs)
    return Routed(residuals, inputs, anchor_index)


@dataclass(frozen=True)
class AppearanceCondition:
    """The appearance branch's condition of one call, as callers give it: at most one of
    - `keyframe_latent`: one keyframe latent per sample `(batch, 4, h, w)`, shown at `keyframe_index` (default: the
      window's centre), encoded in the call;
    - `residuals`: residuals computed beforehand (`AppearanceBranch.residuals_at`), already scaled;
    - `window`: keyframe latents `(batch or 1, keyframes, 4, h, w)` and the window frames they show, for a branch
      that reads the noisy latent (SparseCtrl).
    A keyframe or window at `scale` 0 asks for nothing: the branch does not run.
    """

    keyframe_latent: torch.Tensor | None = None
    keyframe_index: int | None = None
    residuals: BranchResiduals | None = None
    window: tuple[torch.Tensor, Sequence[int]] | None = None
    scale: float = 1.0

    def __post_init__(self):
        if self.keyframe_latent is not None and self.residuals is not None:
            raise ValueError("pass either `keyframe_latent` or precomputed `appearance` residuals, not both")
        if self.window is not None and (self.keyframe_latent is not None or self.residuals is not None):
            raise ValueError("pass `appearance_condition` alone, without `keyframe_latent` or `appearance`")

    @property
    def acts(self) -> bool:
        """Whether the branch contributes to this call."""
        return self.residuals is not None or (self.scale != 0 and (self.keyframe_latent is not None
                                                                   or self.window is not None))


class AppearanceBranch(SideBranch):
    """The appearance branch of a trident: residuals that carry an edited keyframe's look into the main branch.

    `per_timestep`: the residuals depend on the keyframes and the timestep alone (not on the noisy latent or the
    text), so a caller computes them once per timestep for every window and guidance half (`residuals_at`);
    otherwise they are computed per call from the window's latent (`window_residuals`).
    `centres_keyframes`: each keyframe needs a window centred on it (the branch was trained that way).
    """

    per_timestep = False
    centres_keyframes = False

    def __init__(self, network: nn.Module):
        self.network = network

    def contributions(self, call: BranchCall, condition: AppearanceCondition) -> list[Contribution]:
        """The residuals of the condition's one source: given, of one keyframe latent, or of the window's keyframes."""
        if not condition.acts:
            return []
        if condition.residuals is not None:
            return [condition.residuals]
        if condition.keyframe_latent is not None:
            return [self.keyframe_residuals(condition.keyframe_latent, condition.keyframe_index, call.timestep,
                                            condition.scale, call.num_frames)]
        return [self.window_residuals(call.sample, call.timestep, call.text, *condition.window, condition.scale)]

    def residuals_at(self, keyframe_latents: torch.Tensor, timesteps: Sequence, frames: Sequence[int],
                     scale: float) -> list[BranchResiduals]:
        raise ValueError(f"{type(self.network).__name__} reads the noisy latent: its residuals are computed per call")

    def keyframe_residuals(self, keyframe_latent: torch.Tensor, keyframe_index: int | None, timestep: torch.Tensor,
                           scale: float, num_frames: int) -> BranchResiduals:
        raise ValueError(f"{type(self.network).__name__} takes its keyframes as a condition of the window "
                         "(`appearance_condition`)")

    def window_residuals(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                         latents: torch.Tensor, frames: Sequence[int], scale: float) -> BranchResiduals:
        raise ValueError(f"{type(self.network).__name__} depends on the keyframes and timestep alone: pass its "
                         "residuals (`appearance`) or one `keyframe_latent`")


class KeyframeEncoderBranch(AppearanceBranch):
    """CCEdit's keyframe encoder: residuals from the keyframe latents and the timestep, added into the main branch's
    stream at each keyframe's frame; trained with the keyframe at the window's centre."""

    per_timestep = True
    centres_keyframes = True

    def residuals_at(self, keyframe_latents: torch.Tensor, timesteps: Sequence, frames: Sequence[int],
                     scale: float) -> list[BranchResiduals]:
        """The residuals at each of `timesteps`, from one run of the encoder on a row per timestep and keyframe.

        A batch of one keyframe runs the encoder's small layers far below the device's speed (on the CPU PyTorch
        even leaves oneDNN for its reference convolution below 20480 input values), so a caller that knows the
        timesteps to come computes several at once.
        """
        count, device = keyframe_latents.shape[0], keyframe_latents.device
        steps = torch.stack([torch.as_tensor(t, device=device, dtype=torch.float32).reshape(()) for t in timesteps])
        rows = keyframe_latents.repeat(len(timesteps), 1, 1, 1)  # timestep-major: the keyframes at each timestep
        down, mid = self.network(rows, steps.repeat_interleave(count), scale)
        return [
            BranchResiduals.shared([d[i * count:(i + 1) * count] for d in down], mid[i * count:(i + 1) * count],
                                   frames, into="stream")
            for i in range(len(timesteps))
        ]

    def keyframe_residuals(self, keyframe_latent: torch.Tensor, keyframe_index: int | None, timestep: torch.Tensor,
                           scale: float, num_frames: int) -> BranchResiduals:
        """One keyframe latent per sample, aimed at its frame (default: the centre) of a `num_frames` window."""
        keyframe_index = centre_frame(num_frames) if keyframe_index is None else keyframe_index
        if not 0 <= keyframe_index < num_frames:
            raise ValueError(f"`keyframe_index` must be in [0, {num_frames - 1}], got {keyframe_index}")
        return BranchResiduals.per_sample(*self.network(keyframe_latent, timestep, scale), keyframe_index,
                                          into="stream")


class SparseControlBranch(AppearanceBranch):
    """SparseCtrl: residuals for every frame from the noisy latent, conditioned on keyframe latents at their window
    frames (zeros and a zero mask elsewhere), as diffusers' SparseCtrl pipeline conditions it; keyframes may sit at
    any position of a window."""

    def contributions(self, call: BranchCall, condition: AppearanceCondition) -> list[Contribution]:
        """As every appearance branch; one keyframe latent per sample (as training gives it) is the window's
        keyframe at its frame (default: the centre)."""
        if condition.keyframe_latent is not None:
            index = centre_frame(call.num_frames) if condition.keyframe_index is None else condition.keyframe_index
            if not 0 <= index < call.num_frames:
                raise ValueError(f"`keyframe_index` must be in [0, {call.num_frames - 1}], got {index}")
            condition = replace(condition, keyframe_latent=None, keyframe_index=None,
                                window=(condition.keyframe_latent[:, None], [index]))
        return super().contributions(call, condition)

    def window_residuals(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                         latents: torch.Tensor, frames: Sequence[int], scale: float) -> BranchResiduals:
        b, _, f, h, w = sample.shape
        frames = list(frames)
        condition = sample.new_zeros(b, latents.shape[-3], f, h, w)
        mask = sample.new_zeros(b, 1, f, h, w)
        condition[:, :, frames] = latents.to(sample.dtype).expand(b, -1, -1, -1, -1).transpose(1, 2)
        mask[:, :, frames] = 1
        down, mid = self.network(
            sample, timestep, encoder_hidden_states.repeat_interleave(f, dim=0), controlnet_cond=condition,
            conditioning_mask=mask, conditioning_scale=scale, return_dict=False,
        )
        return BranchResiduals(list(down), mid, frames=None, into="skips")


class VACEContext(SideBranch):
    """VACE's context as a side branch of Wan's transformer: the window's control latents `(1 or n, 96, f, h, w)`
    (`pipelines/vace_context.py`) and VACE's per-layer scale become inputs the transformer consumes itself (its VACE
    blocks turn them into hints added after its own blocks), one control row per sample of the call. Its network
    is part of the transformer, so the adapter holds none."""

    def contributions(self, call: BranchCall, condition: tuple[torch.Tensor, torch.Tensor]) -> list[MainInputs]:
        control, scale = condition
        n = call.sample.shape[0]
        return [MainInputs({"control_hidden_states": control.expand(n, -1, -1, -1, -1),
                            "control_hidden_states_scale": scale})]


# Appearance adapters by the class of their network (the first registered class the network is an instance of).
APPEARANCE_BRANCHES: dict[type, type[AppearanceBranch]] = {AppearanceEncoder: KeyframeEncoderBranch}


def register_appearance_branch(network_class: type, adapter: type[AppearanceBranch]) -> None:
    """Route appearance networks of `network_class` through `adapter`."""
    APPEARANCE_BRANCHES[network_class] = adapter


def appearance_branch(network: nn.Module | None) -> AppearanceBranch | None:
    """The adapter of an appearance network (None for none)."""
    if network is None:
        return None
    for network_class, adapter in APPEARANCE_BRANCHES.items():
        if isinstance(network, network_class):
            return adapter(network)
    known = ", ".join(c.__name__ for c in APPEARANCE_BRANCHES)
    raise ValueError(f"no appearance branch is registered for {type(network).__name__} (known: {known})")


def _register_sparse_control() -> None:
    from diffusers import SparseControlNetModel

    register_appearance_branch(SparseControlNetModel, SparseControlBranch)


_register_sparse_control()
