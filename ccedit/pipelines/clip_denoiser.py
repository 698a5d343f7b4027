"""The network side of denoising a whole clip: `ClipDenoiser` is the `model_fn` that `denoise` calls.

It runs the trident on each window of frames with that window's conditions and fuses the windows' noise
predictions into one for the whole clip, so the scheduler steps the whole latent at once. The appearance branch
depends only on the keyframes and the timestep: it runs once per timestep, whatever the number of windows and
guidance halves, and for a few coming timesteps in one call. `window_prediction` is the one trident call on a
window, which the memory model traces (`memory.window_call_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ..models import BranchResiduals, TridentModel
from .conditions import TridentConditions, WindowConditions
from .recording import ConditionsRecord
from .windows import Window, whole_clip

# The ControlNets' hint encodings of a whole clip are kept when they fit in this many bytes (about 200 frames of
# SD-1.5 at 512x768 in float16); a longer clip encodes each window's frames at each call, still once for both
# guidance halves.
HINT_CACHE_BYTES = 1 << 30
ENCODE_CHUNK_FRAMES = 16
# The appearance branch runs for this many of the coming timesteps at once (when the caller names them): one
# keyframe alone is too small a batch for the device, and each timestep's residuals are only skip-sized.
APPEARANCE_TIMESTEPS_PER_CALL = 4


def window_prediction(
    trident: TridentModel,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    part: WindowConditions,
    *,
    structure_hints: Sequence[torch.Tensor] | None,
    structure_scales: Sequence[float],
    appearance: BranchResiduals | None,
    keyframe_latents: torch.Tensor | None,
    appearance_scale: float,
) -> torch.Tensor:
    """The trident's call on one window: its prediction `(n, 4, frames, h, w)` in the network's precision.

    Args:
        sample: the window's noisy latents `(n, 4, frames, h, w)` on the network's device and in its precision; `n`
            is the call's batch (both guidance halves).
        timesteps: `(n,)`. text: `(n, tokens, dim)`.
        part: the window's conditions (`TridentConditions.for_window`): its structure maps (unless
            `structure_hints` are given), the keyframes acting on which of its frames, its anchor.
        structure_hints: per ControlNet, the window's hint encodings `(1, C, frames, h, w)`, instead of the maps.
        structure_scales: one per ControlNet.
        appearance: every keyframe's residuals at this timestep, for a branch that depends on nothing else
            (`TridentModel.appearance_per_timestep`); the window takes those of its keyframes.
        keyframe_latents: the keyframes' latents `(keyframes, 4, h, w)` or `(batch, keyframes, 4, h, w)`, for a
            branch that reads the noisy latent (SparseCtrl); the window takes those of its keyframes.
        appearance_scale: the keyframes' strength.
    """
    n = sample.shape[0]
    # One sample's conditions serve the whole batch as views: expanded, not copied.
    if structure_hints is not None:
        structure = {"structure_hints": [h.expand(n, -1, -1, -1, -1) for h in structure_hints]}
    else:
        structure = {"structure_maps": [m.expand(n, -1, -1, -1, -1) for m in part.structure_maps]}
    residuals = condition = None
    if appearance is not None and part.keyframes:
        residuals = appearance.select(part.keyframes, part.keyframe_frames).repeat_to(n)
    elif keyframe_latents is not None and part.keyframes:
        chosen = keyframe_latents[..., list(part.keyframes), :, :, :]
        chosen = chosen[None] if chosen.ndim == 4 else chosen.repeat(n // chosen.shape[0], 1, 1, 1, 1)
        condition = (chosen, part.keyframe_frames)
    return trident(
        sample, timesteps, text, **structure, structure_scale=list(structure_scales), appearance=residuals,
        appearance_condition=condition, appearance_scale=appearance_scale, anchor_index=part.anchor,
    )


class ClipDenoiser:
    """`model_fn(latent_model_input, timestep) -> eps` over a whole clip, window by window.

    Args:
        trident (`TridentModel`): the network.
        conditions (`TridentConditions`): the clip's conditions; `text` has the batch `model_fn` will see.
        num_frames (`int`): frames of the clip.
        windows (`list[Window]`, *optional*): the windows; default one over the whole clip.
        weights (`list[torch.Tensor]`, *optional*): per window, the fusion weight of each position; the weights
            of each frame sum to one over all windows. Default: one everywhere (a single window).
        device, dtype: where the network runs and its precision.
        timesteps (*optional*): the timesteps the denoiser will be called at, in order (the scheduler's), so that
            the appearance branch can run for several at once; a timestep not listed is computed on its own.
    """

    def __init__(
        self,
        trident: TridentModel,
        conditions: TridentConditions,
        num_frames: int,
        windows: list[Window] | None = None,
        weights: list[torch.Tensor] | None = None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        timesteps=None,
    ):
        self.trident = trident
        self.conditions = conditions
        self.num_frames = num_frames
        self.windows = windows if windows is not None else whole_clip(num_frames)
        self.weights = weights if weights is not None else [torch.ones(len(w)) for w in self.windows]
        self.device, self.dtype = device, dtype
        self.text = conditions.text.to(device, dtype)
        self.timesteps = [] if timesteps is None else [float(t) for t in timesteps]
        self._appearance: dict[float, BranchResiduals] = {}
        self._clip_hints: list[torch.Tensor] | None = None
        self.on_window = None  # optional callback after each window's call (progress bars)
        self.recorder: ConditionsRecord | None = None  # records each window's conditions at its first call
        maps = conditions.structure_maps
        self.encode_hints = bool(maps) and trident.hints_can_be_encoded
        hint_bytes = sum(
            net.config.block_out_channels[0] * m.shape[0] * m.shape[-2] * m.shape[-1] // 64
            for net, m in zip(trident.structure, maps)
        ) * torch.finfo(dtype).bits // 8
        self.keep_clip_hints = self.encode_hints and hint_bytes <= HINT_CACHE_BYTES

    def appearance_at(self, timestep: torch.Tensor) -> BranchResiduals | None:
        """The residuals of every keyframe at `timestep` (for an appearance branch that depends on nothing else; see
        `TridentModel.appearance_per_timestep`), computed with those of the next few planned timesteps on the first
        call for any of them."""
        if not self.conditions.uses_appearance or not self.trident.appearance_per_timestep:
            return None
        key = float(timestep)
        if key not in self._appearance:
            chunk = [key]
            if key in self.timesteps:
                start = self.timesteps.index(key)
                chunk = list(dict.fromkeys(self.timesteps[start:start + APPEARANCE_TIMESTEPS_PER_CALL]))
            self._appearance = dict(zip(chunk, self._appearance_residuals(chunk)))  # the previous chunk is done
        return self._appearance[key]

    def _appearance_residuals(self, timesteps: list[float]) -> list[BranchResiduals]:
        keyframes = self.conditions.keyframes
        latents = keyframes.latents.to(self.device, self.dtype)
        count, rows = len(keyframes), latents.flatten(0, -4)
        computed = self.trident.appearance_residuals_at(
            rows, timesteps, range(rows.shape[0]), self.conditions.appearance_scale
        )
        if not keyframes.per_sample:
            return computed
        batch = latents.shape[0]  # one row per (sample, keyframe) -> (batch, keyframes, ...)
        return [
            replace(r, down=[d[0].unflatten(0, (batch, count)) for d in r.down],
                    mid=r.mid[0].unflatten(0, (batch, count)), frames=tuple(range(count)))
            for r in computed
        ]

    def structure_hints(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """The ControlNets' hint encodings of clip frames `frames`, `(1, C, len(frames), h, w)` each: sliced from
        the whole clip's (encoded on first use) when they fit in memory, else encoded now."""
        maps = self.conditions.structure_maps
        if not self.keep_clip_hints:
            return self.trident.encode_structure([self.conditions.maps_at(m, frames, self.device, self.dtype) for m in maps])
        if self._clip_hints is None:
            chunks = [
                self.trident.encode_structure([self.conditions.maps_at(m, index, self.device, self.dtype) for m in maps])
                for index in torch.arange(self.num_frames).split(ENCODE_CHUNK_FRAMES)
            ]
            self._clip_hints = [torch.cat(per_net, dim=2) for per_net in zip(*chunks)]
        return [h[:, :, frames.to(h.device)] for h in self._clip_hints]

    def _record(self, window_index: int, window: Window, part) -> None:
        """Give the recorder this window's conditions as its networks take them: each ControlNet's maps (the slice
        its hint encoding comes from, made by the same `maps_at`), the keyframes acting where they act, and a region
        edit's latent mask of the window."""
        index = torch.as_tensor(window.frames, dtype=torch.long)
        maps = [self.conditions.maps_at(m, index, dtype=self.dtype) for m in self.conditions.structure_maps]
        keyframes = [(self.conditions.keyframes.indices[k], position)
                     for k, position in zip(part.keyframes, part.keyframe_frames)]
        self.recorder.add_window(window_index, window.frames, part.anchor, keyframes, maps, part.mask)

    def __call__(self, latent_model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        n, f = latent_model_input.shape[0], latent_model_input.shape[2]
        if f != self.num_frames:
            raise ValueError(f"the latents have {f} frames, the windows were planned for {self.num_frames}")
        timesteps = torch.as_tensor(timestep, device=self.device).expand(n)
        residuals = self.appearance_at(timestep)
        keyframe_latents = None  # for a branch that reads the noisy latent, which runs in every window call
        if residuals is None and self.conditions.uses_appearance:
            keyframe_latents = self.conditions.keyframes.latents.to(self.device, self.dtype)
        fused = torch.zeros(latent_model_input.shape, device=latent_model_input.device, dtype=torch.float32)
        for window_index, (window, weight) in enumerate(zip(self.windows, self.weights, strict=True)):
            index = torch.as_tensor(window.frames, device=latent_model_input.device)
            part = self.conditions.for_window(
                window.frames, window.centre, window.keyframe_frames(), device=self.device, dtype=self.dtype,
                with_maps=not self.encode_hints,
            )
            if self.recorder is not None and not self.recorder.window_seen(window_index):
                self._record(window_index, window, part)
            hints = self.structure_hints(index.cpu()) if self.encode_hints else None
            eps = window_prediction(
                self.trident, latent_model_input[:, :, index].to(self.device, self.dtype), timesteps, self.text, part,
                structure_hints=hints, structure_scales=self.conditions.structure_scales, appearance=residuals,
                keyframe_latents=keyframe_latents, appearance_scale=self.conditions.appearance_scale,
            ).float()
            weight = weight.to(eps.device)[None, None, :, None, None]
            fused.index_add_(2, index.to(fused.device), (eps * weight).to(fused.device))
            if self.on_window is not None:
                self.on_window()
        return fused
