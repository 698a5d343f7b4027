"""VACE's context is a side branch like the trident's: its control latents and per-layer scale reach the transformer
as inputs it consumes itself."""

from __future__ import annotations

import torch

from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts
from ccedit.pipelines.vace_denoiser import window_prediction


def test_vace_context_reaches_the_transformer_one_control_row_per_sample():
    transformer = tiny_wan_vace_parts()["transformer"]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 3, 4, 4, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    control = torch.randn(1, 96, 3, 4, 4, generator=g)
    scale = torch.tensor([1.0, 0.5])
    calls = []
    hook = transformer.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            prediction = window_prediction(transformer, latents, torch.tensor(700), text, control, scale)
            other = window_prediction(transformer, latents, torch.tensor(700), text, torch.zeros_like(control), scale)
    finally:
        hook.remove()
    given = calls[0]
    assert given["control_hidden_states"].shape == (2, 96, 3, 4, 4)  # the shared row serves both samples
    assert torch.equal(given["control_hidden_states"][0], control[0])
    assert torch.equal(given["control_hidden_states"][1], control[0])
    assert given["control_hidden_states_scale"] is scale
    assert prediction.shape == latents.shape
    assert (prediction - other).abs().max() > 1e-4  # the control latents steer the prediction
