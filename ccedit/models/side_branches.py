"""Side branches as adapters of one protocol: each turns (sample, timestep, text, its condition) into residuals for
the main branch (`BranchResiduals`), and says how its condition may be shared and placed.

`TridentModel` holds the networks (their parameters and file layout stay its own) and routes each call through the
adapter its appearance network's class is registered with, so it never asks which network it holds. A new side
branch is an adapter class and one `register_appearance_branch` line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .appearance import AppearanceEncoder
from .centre import centre_frame
from .residuals import BranchResiduals


class AppearanceBranch:
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
