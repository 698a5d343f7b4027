"""The one contract between a trident's side branches and its main branch: residuals, where they go, which frames.

Every side branch (structure ControlNets, CCEdit's appearance encoder, SparseCtrl) returns `BranchResiduals`: one
tensor per encoder output of the main branch's UNet and one for its middle block, and
- `into`: `"skips"` adds them to the stored skip connections and the middle output, the way diffusers' ControlNets
  feed a UNet (structure, SparseCtrl); `"stream"` adds them to the encoder's outputs *before* they are stored, so
  later encoder blocks see them too, and to the middle output (CCEdit's appearance branch, ref §2.4);
- `frames`: `None` for every frame (dense tensors `(batch * frames, C, h, w)`, frame-major per sample), or the
  window frames they are aimed at (tensors `(batch or 1, len(frames), C, h, w)`; a leading 1 serves every sample).
A main branch accepts any list of them (`VideoUNet` all kinds; a main branch that only takes dense skip residuals,
such as diffusers' `UNetMotionModel`, gets them through `dense`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

INJECTIONS = ("skips", "stream")


@dataclass(frozen=True)
class BranchResiduals:
    """A side branch's contribution to the main branch; see the module docstring.

    Args:
        down (`list[torch.Tensor]`): one per encoder output (the `conv_in` output first), shaped as `frames` says.
        mid (`torch.Tensor`): the middle block's.
        frames (`tuple[int, ...]`, *optional*): target frames, or `None` for every frame.
        into (`str`): `"skips"` or `"stream"`.
    """

    down: list[torch.Tensor]
    mid: torch.Tensor
    frames: tuple[int, ...] | None = None
    into: str = "skips"

    def __post_init__(self):
        if self.into not in INJECTIONS:
            raise ValueError(f"`into` must be one of {INJECTIONS}, got {self.into!r}")
        if self.frames is not None and (
            self.mid.shape[1] != len(self.frames) or any(d.shape[1] != len(self.frames) for d in self.down)
        ):
            raise ValueError(f"residuals for {self.mid.shape[1]} frames but {len(self.frames)} target frames")

    @classmethod
    def shared(cls, down: Sequence[torch.Tensor], mid: torch.Tensor, frames: Sequence[int], into: str) -> "BranchResiduals":
        """From a branch run on a batch of conditions (one row each, e.g. keyframes), shared by every sample."""
        return cls([d[None] for d in down], mid[None], tuple(int(f) for f in frames), into)

    @classmethod
    def per_sample(cls, down: Sequence[torch.Tensor], mid: torch.Tensor, frame: int, into: str) -> "BranchResiduals":
        """From a branch run on one condition per sample (one row each), all aimed at `frame`."""
        return cls([d[:, None] for d in down], mid[:, None], (int(frame),), into)

    def select(self, keep: Sequence[int], frames: Sequence[int]) -> "BranchResiduals":
        """Targeted residuals `keep` (positions along the frames axis), aimed at window frames `frames`."""
        keep = list(keep)
        return replace(self, down=[d[:, keep] for d in self.down], mid=self.mid[:, keep],
                       frames=tuple(int(f) for f in frames))

    def repeat_to(self, batch: int) -> "BranchResiduals":
        """Targeted residuals of `b` samples repeated for a batch of `batch` (`[uncond; cond]` under guidance)."""
        rows = self.mid.shape[0]
        if self.frames is None or rows in (1, batch):
            return self
        if batch % rows:
            raise ValueError(f"residuals for {rows} samples cannot serve a batch of {batch}")
        times = batch // rows
        return replace(self, down=[d.repeat(times, *[1] * (d.ndim - 1)) for d in self.down],
                       mid=self.mid.repeat(times, *[1] * (self.mid.ndim - 1)))

    def add(self, hidden: torch.Tensor, residual: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`(b t) c h w` features plus `residual` (one of `down` or `mid`) at its frames."""
        if self.frames is None:
            return hidden + residual
        framed = hidden.view(-1, num_frames, *hidden.shape[1:]).clone()
        for k, frame in enumerate(self.frames):
            framed[:, frame] += residual[:, k]
        return framed.view(hidden.shape)

    def dense(self, batch: int, num_frames: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residuals as `(batch * frames, C, h, w)` tensors, zero at frames they do not target."""
        if self.frames is None:
            return list(self.down), self.mid

        def spread(residual: torch.Tensor) -> torch.Tensor:
            out = residual.new_zeros(batch, num_frames, *residual.shape[2:])
            out[:, list(self.frames)] = residual.expand(batch, -1, *residual.shape[2:])
            return out.flatten(0, 1)

        return [spread(d) for d in self.down], spread(self.mid)


def sum_dense(residuals: Sequence[BranchResiduals], batch: int, num_frames: int):
    """The sum of `into="skips"` residuals as dense `(down, mid)`, or `(None, None)` when there are none."""
    down_total, mid_total = None, None
    for r in residuals:
        if r.into != "skips":
            raise ValueError("this main branch takes residuals into its skips only, not into its stream")
        down, mid = r.dense(batch, num_frames)
        down_total = list(down) if down_total is None else [a + b for a, b in zip(down_total, down, strict=True)]
        mid_total = mid if mid_total is None else mid_total + mid
    return down_total, mid_total
