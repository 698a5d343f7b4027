"""`VACEClipDenoiser`: the `model_fn` that `denoise` calls for a VACE transformer over a whole clip in latent time.

Per call it runs the transformer once per window (the window's latent frames, with the reference slots in front, and
the same slice of the control latents) and fuses the windows' predictions with the planner's weights, so a clip of
any length is denoised with the memory of one window. The reference slots are in every window; their fused
prediction is the windows' mean. `window_prediction` is the one transformer call, which the memory model traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..models.side_branches import BranchCall, VACEContext, route
from .windows import Window, fusion_weights


def window_prediction(transformer, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                      control: torch.Tensor, control_scale: torch.Tensor) -> torch.Tensor:
    """One VACE transformer call on one window: `latents` `(n, 16, f, h, w)`, `control` `(1 or n, 96, f, h, w)`,
    `text` `(n, tokens, dim)`; the prediction (flow velocity for Wan) `(n, 16, f, h, w)`."""
    call = BranchCall(latents, timestep.expand(latents.shape[0]), text)
    routed = route(VACEContext().contributions(call, (control, control_scale)), call.num_frames)
    return transformer(
        hidden_states=latents, timestep=call.timestep, encoder_hidden_states=text, **routed.inputs, return_dict=False,
    )[0]


@dataclass
class VACEClipDenoiser:
    """The transformer over a clip's windows.

    Args:
        transformer: a diffusers `WanVACETransformer3DModel`.
        text: prompt embeddings, `[uncond; cond]` under guidance (as `denoise` batches the latents).
        control: the clip's control latents `(1, 96, references + frames, h, w)` (`vace_context.control_latents`).
        control_scale: VACE's per-layer scale.
        references: the reference slots in front of the latent frames.
        windows: the windows over the latent frames (`plan_passes` in latent time).
    """

    transformer: torch.nn.Module
    text: torch.Tensor
    control: torch.Tensor
    control_scale: torch.Tensor
    references: int
    windows: Sequence[Window]
    on_window: Callable[[], None] | None = None  # called after each window's call (progress bars)

    def __post_init__(self):
        frames = self.control.shape[2] - self.references
        self.weights = fusion_weights(self.windows, frames)
        refs = list(range(self.references))
        self.positions = [refs + [self.references + f for f in w.frames] for w in self.windows]

    def __call__(self, latent_model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.dtype
        device = latent_model_input.device
        fused = torch.zeros(latent_model_input.shape, device=device, dtype=torch.float32)
        share = 1.0 / len(self.windows)  # each window's part of the reference slots' prediction
        for positions, weight in zip(self.positions, self.weights):
            index = torch.as_tensor(positions, device=device)
            prediction = window_prediction(
                self.transformer, latent_model_input[:, :, index].to(dtype), torch.as_tensor(timestep, device=device),
                self.text, self.control[:, :, index.to(self.control.device)], self.control_scale,
            ).float()
            w = torch.cat([torch.full((self.references,), share), weight]).to(device)
            fused.index_add_(2, index, prediction * w[None, None, :, None, None])
            if self.on_window is not None:
                self.on_window()
        return fused
