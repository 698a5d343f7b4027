"""Compare ccedit against outputs of the original implementation stored in reference fixtures.

Two kinds of fixture (see the fixture folder's README): network fixtures (one forward of a tiny network: final
output and each branch's residuals) and sampling fixtures (a whole sampling run with the latent after every step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..convert.fixtures import Fixture
from ..convert.networks import load_trident
from ..models.centre import centre_frame

# Float32 re-implementation tolerances given with the fixtures.
NETWORK_ATOL, NETWORK_RTOL = 1e-5, 1e-4
SAMPLING_ATOL = 5e-4


@dataclass
class ParityResult:
    fixture: str
    max_abs_err: float
    passed: bool
    details: dict[str, float] = field(default_factory=dict)


def original_hint_remap(hint: torch.Tensor) -> torch.Tensor:
    """The original wrapper's `1 - (h + 1) / 2` (ref §2.3): fixtures store hints before it, ccedit's maps after."""
    return 1 - (hint + 1) / 2


def check_network_fixture(fixture: Fixture) -> ParityResult:
    """Run ccedit's trident on the fixture's inputs; compare the output and every branch's residuals."""
    t = fixture.tensors
    model = load_trident(fixture.state, fixture.geometry, prefix="", source=str(fixture.path))
    x, timesteps, context = t["input.x"], t["input.timesteps"], t["input.context"]
    maps = original_hint_remap(t["input.control_hint"])
    b, _, f, _, _ = x.shape
    details: dict[str, float] = {}
    allclose = True

    def compare(name: str, got: torch.Tensor) -> None:
        nonlocal allclose
        ref = t[name]
        details[name] = (got - ref).abs().max().item()
        allclose &= torch.allclose(got, ref, atol=NETWORK_ATOL, rtol=NETWORK_RTOL)

    keyframe = {}
    with torch.no_grad():
        down, mid = model.structure_residuals(x, timesteps, context, [maps], [1.0])
        for i, r in enumerate([*down, mid]):
            compare(f"controlnet_out.{i}", r.view(b, f, *r.shape[1:]).transpose(1, 2))
        if model.appearance is not None:
            app_down, app_mid = model.appearance(t["input.cond_feat"], timesteps)
            for i, r in enumerate([*app_down, app_mid]):
                compare(f"controlnet_img_out.{i}", r)
            keyframe = dict(keyframe_latent=t["input.cond_feat"], keyframe_index=centre_frame(f))
        compare("output", model(x, timesteps, context, structure_maps=[maps], **keyframe))
    return ParityResult(fixture.path.name, max(details.values()), allclose, details)

