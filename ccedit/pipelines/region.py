"""Region edits in the pipeline: the mask on the latent grid, the source kept outside it while denoising, and the
decoded frames composited into the source.

A region edit takes a soft pixel mask `(frames, H, W)` in [0, 1] (1: edited, 0: the source kept). Three rules, each
decided here:

- the latent mask (`latent_mask`): a latent is edited when any pixel it decodes to has a mask value above 0
  (max-pooling over the VAE's factor), so the edit reaches every pixel the composite takes anything from;
- while denoising (`SourceRegion`, applied by `denoise`): before each sampler step the latents outside the latent
  mask are the source latents noised to that step with one fixed noise draw (the edit's initial noise, as SDEdit
  noises the source); at every evaluation the prediction there is the one whose clean estimate is the source
  (`Parameterisation.prediction_for_clean`, for noise, velocity and flow alike); the last step ends on the clean
  source;
- the output (`composite`): `soft * edited + (1 - soft) * source`, rounded, so every pixel where the mask is 0 is
  the source's exactly, and the hard region the edit's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import InvalidInputError
from ..schedulers import Parameterisation


def check_mask(mask, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """A region mask as float32 `(frames, H, W)` in [0, 1] on the CPU, refused in one line when it does not fit."""
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float().cpu()
    if tuple(mask.shape) != (num_frames, *size):
        raise InvalidInputError(f"`mask` must be (frames, height, width) = {(num_frames, *size)}, got "
                                f"{tuple(mask.shape)}")
    if not bool(((mask >= 0) & (mask <= 1)).all()):
        raise InvalidInputError("`mask` must hold values in [0, 1] (1: edited, 0: the source kept)")
    return mask


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Bool `(frames, H / factor, W / factor)`: the latents any of whose pixels the mask reaches (max-pooling)."""
    return F.max_pool2d((mask > 0).float()[:, None], factor, factor)[:, 0] > 0


@dataclass(frozen=True)
class SourceRegion:
    """What a region edit keeps while denoising: the source latents outside the latent mask.

    Args:
        mask (`torch.Tensor`): bool `(frames, h, w)`, True where the edit acts.
        latents (`torch.Tensor`): the source's clean latents, `(batch or 1, channels, frames, h, w)`.
        noise (`torch.Tensor`): the noise the source is noised with at every step, `(batch, channels, frames, h, w)`.
    """

    mask: torch.Tensor
    latents: torch.Tensor
    noise: torch.Tensor

    def for_frames(self, frames: Sequence[int]) -> SourceRegion:
        """The region of the sub-clip made of clip frames `frames`."""
        index = torch.as_tensor(list(frames), dtype=torch.long)
        return SourceRegion(self.mask[index], self.latents[:, :, index.to(self.latents.device)],
                            self.noise[:, :, index.to(self.noise.device)])

    def _inside(self, like: torch.Tensor) -> torch.Tensor:
        return self.mask.to(like.device)[None, None]

    def noised(self, scheduler: SchedulerMixin, prediction: Parameterisation, timestep: torch.Tensor,
               index: int) -> torch.Tensor:
        """The source at evaluation `index` of the scheduler's schedule, as `sdedit_start` noises it."""
        clean, noise = self.latents.float(), self.noise.float().to(self.latents.device)
        return prediction.noised(scheduler, clean, noise, timestep, index)

    def keep_source(self, latents: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """`latents` inside the mask, `source` outside."""
        return torch.where(self._inside(latents), latents, source.to(latents.device, latents.dtype))

    def source_prediction(self, scheduler: SchedulerMixin, prediction: Parameterisation, latents: torch.Tensor,
                          model_output: torch.Tensor, timestep: torch.Tensor, index: int) -> torch.Tensor:
        """`model_output` with, outside the mask, the prediction whose clean estimate is the source."""
        target = self.latents.to(latents.device).expand_as(latents)
        kept = prediction.prediction_for_clean(scheduler, latents, target, timestep, index).to(model_output.dtype)
        return torch.where(self._inside(model_output), model_output, kept)


def composite(edited: torch.Tensor, source: np.ndarray, mask: torch.Tensor) -> torch.Tensor:
    """Edited frames composited into the source: `mask * edited + (1 - mask) * source`.

    `edited` is uint8 `(batch, frames, H, W, 3)` (rounded back to uint8) or float `(batch, frames, 3, H, W)` in
    [0, 1]; `source` uint8 `(frames, H, W, 3)`; `mask` float `(frames, H, W)`.
    """
    if edited.dtype == torch.uint8:
        weight = mask.to(edited.device)[None, :, :, :, None]
        src = torch.from_numpy(source).to(edited.device).float()[None]
        return (weight * edited.float() + (1 - weight) * src).round().to(torch.uint8)
    weight = mask.to(edited.device)[None, :, None]
    src = (torch.from_numpy(source).to(edited.device).float() / 255).permute(0, 3, 1, 2)[None]
    return weight * edited + (1 - weight) * src
