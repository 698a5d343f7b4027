"""VACE's context for a whole clip: the control video, its mask and the reference images, as the transformer takes
them (`control_hidden_states`).

VACE reads one video beside the prompt: where its mask is 1 the frame is generated and the video is the control (a
structure map); where the mask is 0 the video is kept (a keyframe at its frame, the source outside a region). The
control latents are the VAE encodings of the kept part and of the generated part (16 + 16 channels), and the mask
folded to the latent grid (64 channels: each latent pixel's 8x8 pixels); reference images come first in time, with
zeros beside them and a zero mask. Pixel frames and latent frames differ: Wan's VAE is causal in time, so a clip of
4k+1 frames makes k+1 latent frames (the first frame alone, then groups of 4), and `time_grid.TimeGrid` converts between them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .time_grid import TimeGrid  # noqa: F401 - re-exported beside the context
from .wan_vae import encode_frames

# Frames per chunk while streaming the control video through the VAE: uint8 on the host, float on the device.
ENCODE_CHUNK = 16


@dataclass(frozen=True)
class ContextVideo:
    """What VACE sees at every pixel frame of the fitted clip.

    Args:
        video: uint8 `(frames, H, W, 3)`: the control map where generated, the kept picture elsewhere.
        generate: bool `(frames, H, W)`: True where VACE generates (mask 1).
    """

    video: np.ndarray
    generate: np.ndarray

    @classmethod
    def build(cls, control: np.ndarray | None, size: tuple[int, int, int], *, keyframes: Sequence[np.ndarray] = (),
              keyframe_frames: Sequence[int] = (), keep: np.ndarray | None = None,
              source: np.ndarray | None = None, fitted: int | None = None) -> ContextVideo:
        """The context of a clip of `size` (frames, H, W): `control` uint8 `(frames, H, W, 3)` (None: no structure,
        VACE's zero video), each keyframe kept whole at its frame, `source` kept where `keep` (bool `(frames, H,
        W)`) is True; then padded to `fitted` frames by repeating the last."""
        frames, height, width = size
        video = np.full((frames, height, width, 3), 128, np.uint8) if control is None else control.copy()
        generate = np.ones((frames, height, width), bool)
        if keep is not None:
            video[keep] = source[keep]
            generate &= ~keep
        for image, frame in zip(keyframes, keyframe_frames):
            video[frame] = image
            generate[frame] = False
        fitted = frames if fitted is None else fitted
        return cls(repeat_last(video, fitted), repeat_last(generate, fitted))

    def __len__(self) -> int:
        return len(self.video)


def repeat_last(frames: np.ndarray, count: int) -> np.ndarray:
    """`frames` extended to `count` by repeating the last: how a clip is fitted to the 4k+1 frames the VAE takes."""
    return frames if count <= len(frames) else np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), 0)])


def encode_video(vae, frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 frames `(4k+1, H, W, 3)` as normalised latents, streamed through the VAE `ENCODE_CHUNK` frames at a
    time (no float copy of the clip)."""
    return encode_frames(vae, (unit_to_signed(frames[s:s + ENCODE_CHUNK], device).to(vae.dtype)
                               for s in range(0, len(frames), ENCODE_CHUNK)))


def unit_to_signed(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 `(n, H, W, 3)` -> float `(1, 3, n, H, W)` in [-1, 1], computed as diffusers' video processor computes it
    (`/ 255`, then `2x - 1`), so the control video is the one diffusers' pipeline would build from the same frames."""
    unit = torch.from_numpy(frames).to(device).float() / 255.0
    return (2.0 * unit - 1.0).permute(3, 0, 1, 2)[None]


def _stream(context: ContextVideo, part: str, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """The kept (`part="kept"`) or generated part of the context video, chunk by chunk, as VACE splits it."""
    for start in range(0, len(context), ENCODE_CHUNK):
        video = unit_to_signed(context.video[start:start + ENCODE_CHUNK], device).to(dtype)
        mask = torch.from_numpy(context.generate[start:start + ENCODE_CHUNK]).to(device, dtype)[None, None]
        yield video * mask if part == "generated" else video * (1 - mask)


def encode_references(vae, images: Sequence[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Each reference image (uint8 `(H, W, 3)` at the working size) as a one-frame latent `(1, 16, 1, h, w)`."""
    return [encode_frames(vae, [unit_to_signed(image[None], device).to(vae.dtype)]) for image in images]


def control_latents(pipe, context: ContextVideo, references: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """VACE's `control_hidden_states` for the whole clip: `(1, 96, references + latent frames, h, w)`, reference
    slots first (the last reference first, as diffusers' pipeline orders them), in the transformer's dtype."""
    vae = pipe.vae
    kept = encode_frames(vae, _stream(context, "kept", device, vae.dtype))
    generated = encode_frames(vae, _stream(context, "generated", device, vae.dtype))
    latents = torch.cat([kept, generated], dim=1)
    for reference in encode_references(vae, references, device):
        latents = torch.cat([torch.cat([reference, torch.zeros_like(reference)], dim=1), latents], dim=2)
    folded = fold_mask(context.generate, latents.shape[2] - len(references), pipe.vae_scale_factor_spatial)
    folded = torch.cat([torch.zeros_like(folded[:, :len(references)]), folded], dim=1)[None].to(device)
    return torch.cat([latents.to(folded.dtype), folded], dim=1).to(pipe.transformer.dtype)


def nearest_exact_sources(frames: int, latents: int) -> np.ndarray:
    """The pixel frame each latent frame's mask is read from: nearest-exact interpolation from `frames` to
    `latents`, computed in float32 as torch's kernel computes it (`floor((j + 0.5) * frames / latents)`)."""
    scale = np.float32(frames) / np.float32(latents)
    index = np.floor((np.arange(latents, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(index, frames - 1)


def fold_mask(generate: np.ndarray, latents: int, factor: int) -> torch.Tensor:
    """VACE's mask on the latent grid, `(factor**2, latents, H / factor, W / factor)` float: each channel one pixel
    of every `factor x factor` block, each latent frame the mask of one pixel frame (nearest in time).

    This is the folding of diffusers' `WanVACEPipeline.prepare_masks`, written per latent frame so that only the
    frames it reads are ever made float (that method interpolates a float copy of the whole clip's mask).
    """
    _, height, width = generate.shape
    picked = torch.from_numpy(generate[nearest_exact_sources(len(generate), latents)]).float()
    blocks = picked.view(latents, height // factor, factor, width // factor, factor)
    return blocks.permute(2, 4, 0, 1, 3).reshape(factor * factor, latents, height // factor, width // factor)
