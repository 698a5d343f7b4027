"""What the trident is conditioned on, as data: text, structure maps, keyframes and their scales.

`TridentConditions` holds the conditions of a whole clip, validated once (`CCEditPipeline.check_inputs`). A
window of frames takes its slice with `for_window`, which re-indexes the keyframes that fall inside it. Defaults
that concern keyframes are decided here and nowhere else (`default_keyframe_index`), and so is whether they act
(`keyframes_act`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..annotators.maps import as_unit
from ..errors import InvalidInputError
from ..models.centre import centre_frame, nearest_centre


def default_keyframe_index(num_frames: int) -> int:
    """The frame a keyframe shows when none is named: the centre frame, where CCEdit trained its keyframe."""
    return centre_frame(num_frames)


def keyframes_act(num_keyframes: int, appearance_scale: float) -> bool:
    """Whether an edit's keyframes act: some are given, at a non-zero appearance scale.

    The one rule for what a keyframe does: at scale 0 keyframes act like no keyframe at all (no appearance branch,
    no window of their own, no pinned latent, no anchor prior from them), whether an edit comes through the
    pipeline, the command line or `--dry-run`'s plan.
    """
    return num_keyframes > 0 and appearance_scale != 0


def check_keyframe_indices(indices: Sequence[int], num_frames: int) -> tuple[int, ...]:
    """Resolve negative indices (counted from the end) and refuse indices out of range or given twice."""
    resolved = []
    for index in indices:
        frame = index + num_frames if index < 0 else index
        if not 0 <= frame < num_frames:
            raise InvalidInputError(
                f"keyframe index {index} is out of range: the edit has {num_frames} frames (0-{num_frames - 1})"
            )
        if frame in resolved:
            raise InvalidInputError(f"two keyframes show frame {frame}: give each keyframe its own frame index")
        resolved.append(frame)
    return tuple(resolved)


@dataclass(frozen=True)
class Keyframes:
    """Edited keyframes of a clip: the frame each shows and its scaled VAE latent.

    Args:
        indices (`tuple[int, ...]`): clip frame of each keyframe, distinct.
        latents (`torch.Tensor`): `(keyframes, 4, h, w)` shared by every sample, or `(batch, keyframes, 4, h, w)`
            with each sample's own (frames edited by an earlier pass), in the order of `indices`.
    """

    indices: tuple[int, ...]
    latents: torch.Tensor

    def __post_init__(self):
        count = self.latents.shape[-4]
        if self.latents.ndim not in (4, 5) or len(self.indices) != count:
            raise ValueError(f"{len(self.indices)} keyframe indices for keyframe latents of shape {tuple(self.latents.shape)}")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"keyframe indices must be distinct, got {self.indices}")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def per_sample(self) -> bool:
        return self.latents.ndim == 5


@dataclass(frozen=True)
class WindowConditions:
    """The conditions of one window: structure maps of its frames and which keyframes act on which of its frames.

    Args:
        structure_maps (`list[torch.Tensor]`): per ControlNet, `(1, 3, frames, H, W)` in `[0, 1]`.
        keyframes (`tuple[int, ...]`): positions in `TridentConditions.keyframes` of the keyframes acting here.
        keyframe_frames (`tuple[int, ...]`): the window frame each of them goes to.
        anchor (`int`): the window frame every frame attends to in cross-frame attention.
        mask (`torch.Tensor`, *optional*): a region edit's latent mask of the window's frames, bool `(frames, h, w)`.
    """

    structure_maps: list[torch.Tensor]
    keyframes: tuple[int, ...]
    keyframe_frames: tuple[int, ...]
    anchor: int
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class TridentConditions:
    """Everything the trident is conditioned on for one clip, besides the noisy latent and the timestep.

    Args:
        text (`torch.Tensor`): text embeddings `(batch, tokens, dim)`; under guidance `[negative; prompt]`.
        structure_maps (`list[torch.Tensor]`): per ControlNet, `(frames, 3, H, W)`: `uint8`, or float in `[0, 1]`.
            They stay where they are (the CPU, for long clips) until a window needs them.
        structure_scales (`tuple[float, ...]`): one per ControlNet; 0 skips that ControlNet.
        keyframes (`Keyframes`, *optional*): the edited keyframes.
        appearance_scale (`float`): strength of the keyframes; 0 makes them act like no keyframe at all.
        mask (`torch.Tensor`, *optional*): a region edit's latent mask, bool `(frames, h, w)`, True where the edit
            acts (`region.latent_mask`); None edits everywhere.
    """

    text: torch.Tensor
    structure_maps: list[torch.Tensor]
    structure_scales: tuple[float, ...]
    keyframes: Keyframes | None = None
    appearance_scale: float = 1.0
    mask: torch.Tensor | None = None

    @property
    def uses_appearance(self) -> bool:
        """Whether the appearance branch runs: whether the keyframes act (`keyframes_act`)."""
        return keyframes_act(0 if self.keyframes is None else len(self.keyframes), self.appearance_scale)

    @staticmethod
    def maps_at(maps: torch.Tensor, index: torch.Tensor, device=None, dtype=None) -> torch.Tensor:
        """Frames `index` of one ControlNet's maps as the network takes them: `(1, 3, frames, H, W)` in `[0, 1]`."""
        return as_unit(maps[index], device, dtype).transpose(0, 1)[None]

    def for_frames(self, frames: Sequence[int]) -> "TridentConditions":
        """The conditions of the sub-clip made of clip frames `frames` (distinct); keyframes among them re-indexed."""
        frames = [int(f) for f in frames]
        index = torch.as_tensor(frames, dtype=torch.long)
        keyframes = None
        if self.keyframes is not None:
            inside = [k for k, frame in enumerate(self.keyframes.indices) if frame in frames]
            latents = self.keyframes.latents[..., inside, :, :, :]
            keyframes = Keyframes(tuple(frames.index(self.keyframes.indices[k]) for k in inside), latents)
        mask = None if self.mask is None else self.mask[index]
        return replace(self, structure_maps=[m[index] for m in self.structure_maps], keyframes=keyframes, mask=mask)

    def for_window(
        self, frames: Sequence[int], anchor: int, keyframe_frames: dict[int, int] | None = None,
        device: torch.device | None = None, dtype: torch.dtype | None = None, with_maps: bool = True,
    ) -> WindowConditions:
        """The slice for a window showing clip frames `frames`.

        Args:
            frames: the clip frame at each window position (a reflect-padded window repeats frames).
            anchor: the window frame of the cross-frame anchor when no keyframe acts here.
            keyframe_frames: clip keyframe index -> the window frame its appearance residuals go to; by default
                every keyframe inside the window goes to its first position. Ignored without appearance.
            device, dtype: where and how the window's structure maps are needed.
            with_maps: slice the structure maps (not needed when their encodings are kept for the whole clip).
        """
        index = torch.as_tensor(list(frames), dtype=torch.long)
        maps = [self.maps_at(m, index, device, dtype) for m in self.structure_maps] if with_maps else []
        chosen: list[int] = []
        targets: list[int] = []
        if self.uses_appearance:
            if keyframe_frames is None:
                keyframe_frames = {}
                for position, frame in enumerate(frames):
                    if frame in self.keyframes.indices:
                        keyframe_frames.setdefault(int(frame), position)
            for frame, position in sorted(keyframe_frames.items(), key=lambda item: item[1]):
                chosen.append(self.keyframes.indices.index(frame))
                targets.append(position)
        if targets:
            # CCEdit's anchor is the keyframe's frame; with several, the one nearest the window's centre.
            anchor = nearest_centre(targets, len(frames))
        mask = None if self.mask is None else self.mask[index]
        return WindowConditions(maps, tuple(chosen), tuple(targets), anchor, mask)

