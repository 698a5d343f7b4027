"""What the networks of a loaded pipeline receive, captured with hooks, for tests that enter where the user does.

`capture_network_inputs(monkeypatch)` makes every pipeline that `ccedit.pipelines.kinds.load_pipeline` builds
record, call by call: the maps each ControlNet's hint encoder encodes, each ControlNet call's noisy latent and hint,
the latents CCEdit's appearance encoder takes, SparseCtrl's conditioning latents and mask, and the images the VAE
encodes. `frame_identity` names the clip frame each row of a network's noisy latent shows, from the initial noise
alone, so a test can check pairings (map of frame k with latent frame k) without asking ccedit's window planner.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ccedit.annotators.maps import as_unit, hold


class NetworkInputs:
    """Hooks on one pipeline's networks; every list holds CPU float32 copies, in call order."""

    def __init__(self, pipe):
        self.pipe = pipe
        nets = pipe.controlnets
        self.hint_inputs: list[list[torch.Tensor]] = [[] for _ in nets]  # (n, 3, H, W) per hint encoder call
        self.controlnet_calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in nets]  # (sample, hint)
        self.appearance_inputs: list[torch.Tensor] = []  # CCEdit's encoder: keyframe latents (rows, 4, h, w)
        self.sparse_calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (sample, condition, mask)
        self.vae_inputs: list[torch.Tensor] = []  # (n, 3, H, W) in [-1, 1]
        for i, net in enumerate(nets):
            net.controlnet_cond_embedding.register_forward_pre_hook(functools.partial(self._hint, i))
            net.register_forward_pre_hook(functools.partial(self._controlnet, i), with_kwargs=True)
        appearance = getattr(pipe, "appearance", None)
        if appearance is not None:
            appearance.register_forward_pre_hook(self._appearance, with_kwargs=True)
        encode = pipe.vae.encode

        def recording_encode(x, *args, **kwargs):
            self.vae_inputs.append(x.detach().float().cpu())
            return encode(x, *args, **kwargs)

        pipe.vae.encode = recording_encode

    def _hint(self, i, module, args):
        self.hint_inputs[i].append(args[0].detach().float().cpu())

    def _controlnet(self, i, module, args, kwargs):
        self.controlnet_calls[i].append((args[0].detach().float().cpu(), kwargs["controlnet_cond"].detach().float().cpu()))

    def _appearance(self, module, args, kwargs):
        if "controlnet_cond" in kwargs:  # SparseCtrl: (sample, timestep, text, controlnet_cond=, conditioning_mask=)
            self.sparse_calls.append((args[0].detach().float().cpu(), kwargs["controlnet_cond"].detach().float().cpu(),
                                      kwargs["conditioning_mask"].detach().float().cpu()))
        else:
            self.appearance_inputs.append(args[0].detach().float().cpu())

    def hint_encoder_maps(self, net: int = 0) -> torch.Tensor:
        """Everything ControlNet `net`'s hint encoder encoded, concatenated."""
        return torch.cat(self.hint_inputs[net])


def capture_network_inputs(monkeypatch) -> list[NetworkInputs]:
    """Hook every pipeline the edit loads from now on; returns the list their `NetworkInputs` are appended to."""
    import ccedit.kinds as kinds

    seen: list[NetworkInputs] = []
    load = kinds.load_pipeline

    def load_and_hook(*args, **kwargs):
        pipe = load(*args, **kwargs)
        seen.append(NetworkInputs(pipe))
        return pipe

    monkeypatch.setattr(kinds, "load_pipeline", load_and_hook)
    return seen


def register_annotator(monkeypatch, cls) -> None:
    """Make annotator class `cls` available by its name for this test, as the built-in ones are (the registry, and
    the torch-free name list the settings are checked against)."""
    from ccedit import config_checks
    from ccedit.annotators import registry

    monkeypatch.setitem(registry.ANNOTATORS, cls.name, cls)
    monkeypatch.setattr(config_checks, "ANNOTATOR_NAMES", (*config_checks.ANNOTATOR_NAMES, cls.name))


def initial_noise(seed: int, num_frames: int, height: int, width: int) -> torch.Tensor:
    """The clip's initial noise `(4, T, h, w)` as an edit with `--seed seed` draws it (one CPU generator, first draw)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, 4, num_frames, height // 8, width // 8), generator=generator)[0]


def frame_identity(rows: torch.Tensor, noise: torch.Tensor, threshold: float = 0.9) -> list[int]:
    """The clip frame each row `(n, 4, h, w)` of a first-step noisy latent shows: the frame of the initial noise it
    correlates with (above `threshold`, else the test fails)."""
    a = rows.flatten(1)
    b = noise.transpose(0, 1).flatten(1)
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    correlation = a @ b.T / a.shape[1]
    best, frames = correlation.max(dim=1)
    assert float(best.min()) > threshold, f"a latent row matches no frame of the initial noise ({best.tolist()})"
    return frames.tolist()


def held_unit(maps: torch.Tensor) -> torch.Tensor:
    """Unit-form maps as an edit hands them to a ControlNet: quantised once, to 256 levels."""
    return as_unit(hold(maps))


def check_controlnet_pairing(inputs: NetworkInputs, expected_maps: torch.Tensor, noise: torch.Tensor, net: int = 0):
    """Every call of ControlNet `net`: each row's hint is the encoding of the map of the frame its latent shows.

    The hint's frame is found among the encodings of `expected_maps` (all clip frames, computed independently);
    the latent's from the initial noise. Returns how many rows were checked.
    """
    controlnet = inputs.pipe.controlnets[net]
    with torch.no_grad():
        encoded = controlnet.controlnet_cond_embedding(expected_maps.to(controlnet.dtype)).float()
    checked = 0
    for sample, hint in inputs.controlnet_calls[net]:
        n = hint.shape[0]
        distances = (hint.flatten(1)[:, None] - encoded.flatten(1)[None]).abs().amax(-1)  # (rows, frames)
        closest = distances.argmin(1)
        scale = float(encoded.abs().max())
        assert float(distances.min(1).values.max()) <= 1e-4 * scale, "a hint matches no frame's map"
        frames = frame_identity(sample, noise)
        assert closest.tolist() == frames, f"maps of frames {closest.tolist()} went with latents of frames {frames}"
        checked += n
    return checked


def write_moving_disk_clip(folder, num_frames: int = 40):
    """A folder of `num_frames` distinct 96x128 PNG frames (another aspect than a square edit's): a grey ramp and a
    textured disk moving across it, so every frame's structure maps differ and carry many grey levels."""
    from ccedit.io import write_image

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (96, 128, 1))
    yy, xx = np.mgrid[0:96, 0:128]
    for k in range(num_frames):
        cx, cy = 20 + 2.2 * k, 30 + 30 * np.sin(k / 6)
        disk = ((xx - cx) ** 2 + (yy - cy) ** 2 < 18**2)[..., None]
        ramp = (xx / 128 * 150 + yy / 96 * 60)[..., None]
        frame = np.where(disk, 230 - texture, ramp + texture * 0.3)
        frame = np.concatenate([frame, frame * 0.8 + 20, 255 - frame * 0.6], axis=-1)
        write_image(folder / f"{k:04d}.png", np.clip(frame, 0, 255).astype(np.uint8))
    return folder


def correlation(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
