"""PROVISIONAL (replaced by the chunked implementation): Wan's VAE, whole clip at once."""

from __future__ import annotations

import torch


def _stats(vae, like):
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return mean, std


def encode_frames(vae, chunks, *, normalise=True):
    video = torch.cat(list(chunks), dim=2)
    z = vae.encode(video.to(vae.dtype)).latent_dist.mode()
    if not normalise:
        return z
    mean, std = _stats(vae, z)
    return ((z.float() - mean) * (1.0 / std)).to(vae.dtype)


def decode_latents(vae, latents, *, denormalise=True, frames_per_chunk=None):
    if denormalise:
        mean, std = _stats(vae, latents)
        latents = latents.to(vae.dtype)
        latents = latents / (1.0 / std).to(latents.dtype) + mean.to(latents.dtype)
    yield vae.decode(latents.to(vae.dtype), return_dict=False)[0]
