"""Wan's causal VAE (diffusers' `AutoencoderKLWan`) in bounded temporal chunks.

Wan's VAE is causal in time: a clip of 4k+1 frames encodes to k+1 latent frames (the first frame alone, then groups of
4), each group seeing the ones before through a per-convolution feature cache. `AutoencoderKLWan.encode` / `decode`
already run that loop group by group, but take and return the whole clip as one float tensor: a 300-frame 480x832
clip is then several GiB of float frames on the accelerator. diffusers offers no streaming API for this VAE, so the
two functions here drive the encoder's and decoder's feature caches by hand, in the same groups as diffusers' loop
(and so with the same results): frames go in as a stream of chunks of any length, and decoded frames come out one
latent frame's worth at a time, for the caller to move to the host as uint8.

The caches are local lists handed to the encoder and decoder, not the VAE's own `_feat_map` / `_enc_feat_map`, so a
paused decode and an encode on the same VAE do not disturb each other. Spatial tiling (`enable_tiling`) is not used:
each chunk is encoded and decoded whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, repeat

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, patchify, unpatchify

# Frames per latent frame after the first (which encodes one frame alone): Wan's temporal compression.
TIME_FACTOR = 4


@torch.no_grad()
def encode_frames(vae, chunks: Iterable[torch.Tensor], *, normalise: bool = True) -> torch.Tensor:
    """The posterior mean latents `(1, z, k+1, h, w)` of a clip of 4k+1 frames given as a stream of chunks.

    Args:
        vae (`AutoencoderKLWan`): the VAE; each chunk moves to its device and dtype as it is encoded.
        chunks: float tensors `(1, 3, n, H, W)` in [-1, 1], any `n` per chunk, together the clip's frames in order.
        normalise: return `(z - latents_mean) / latents_std`, as `WanVACEPipeline` normalises what it encodes.
    Raises:
        ValueError: the frames are not 4k+1 (the caller fits the clip's length), or a chunk is not `(1, C, n, H, W)`
            with the VAE's channels and the first chunk's size.
    """
    _wake(vae)
    cache = _feature_cache(vae.encoder)
    encoded, seen = [], 0
    for index, group in enumerate(_regroup(_checked(chunks, _frame_channels(vae)), _encoder_groups())):
        seen += group.shape[2]
        if group.shape[2] != (1 if index == 0 else TIME_FACTOR):
            raise ValueError(f"Wan's VAE encodes 4k+1 frames (1, 5, 9, ...), got {seen}: fit the clip's length first")
        group = group.to(device=vae.device, dtype=vae.dtype).contiguous()
        if vae.config.patch_size is not None:
            group = patchify(group, patch_size=vae.config.patch_size)
        encoded.append(vae.encoder(group, feat_cache=cache, feat_idx=[0]))  # (1, 2z, 1, h, w)
    if not encoded:
        raise ValueError("Wan's VAE encodes 4k+1 frames (1, 5, 9, ...), got none")
    moments = vae.quant_conv(torch.cat(encoded, dim=2))  # (1, 2z, k+1, h, w): mean, then log-variance
    mean = moments[:, : vae.config.z_dim]
    if not normalise:
        return mean
    # As WanVACEPipeline.prepare_video_latents: in float32, times the inverse of the standard deviation.
    shift, inverse_scale = _latent_statistics(vae, mean.device, torch.float32)
    return ((mean.float() - shift) * inverse_scale).to(vae.dtype)


def decode_latents(vae, latents: torch.Tensor, *, denormalise: bool = True,
                   frames_per_chunk: int | None = None) -> Iterator[torch.Tensor]:
    """The frames of `latents` `(1, z, k+1, h, w)` as float chunks `(1, 3, n, H, W)` in [-1, 1], decoded one latent
    frame at a time: the first chunk holds frame 0, each later one the next 4 frames, unless `frames_per_chunk` asks
    for chunks of that many frames (the last may be shorter). The chunks stay on the VAE's device, in its dtype.

    Args:
        denormalise: the latents are normalised as `WanVACEPipeline` normalises them (`encode_frames`' default);
            they are brought back to the VAE's scale first, as the pipeline does before decoding.
    Raises:
        ValueError: at the call, before any decoding, for latents that are not `(1, z, t, h, w)` or a
            `frames_per_chunk` below 1.
    """
    if latents.dim() != 5 or latents.shape[0] != 1 or latents.shape[1] != vae.config.z_dim:
        raise ValueError(f"Wan's VAE decodes latents (1, {vae.config.z_dim}, t, h, w), got {tuple(latents.shape)}")
    if frames_per_chunk is not None and frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be at least 1, got {frames_per_chunk}")
    decoded = _decoded(vae, latents, denormalise)
    return decoded if frames_per_chunk is None else _regroup(decoded, repeat(frames_per_chunk))


@torch.no_grad()
def _decoded(vae, latents: torch.Tensor, denormalise: bool) -> Iterator[torch.Tensor]:
    """`decode_latents`' chunks, one per latent frame, in the order and with the clamp of `AutoencoderKLWan._decode`."""
    _wake(vae)
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    if denormalise:
        # As WanVACEPipeline.__call__ before decoding: in the VAE's dtype, divided by the inverse standard deviation.
        shift, inverse_scale = _latent_statistics(vae, latents.device, latents.dtype)
        latents = latents / inverse_scale + shift
    latents = vae.post_quant_conv(latents)  # a 1x1x1 convolution: latent-sized, taken whole as diffusers does
    cache = _feature_cache(vae.decoder)
    for index in range(latents.shape[2]):
        frames = vae.decoder(latents[:, :, index:index + 1], feat_cache=cache, feat_idx=[0], first_chunk=index == 0)
        if vae.config.patch_size is not None:
            frames = unpatchify(frames, patch_size=vae.config.patch_size)
        # diffusers clamps unconditionally up to 0.42; a VAE whose config says `clip_output: false` is left unclamped.
        yield frames.clamp(-1.0, 1.0) if getattr(vae.config, "clip_output", True) else frames  # (1, 3, 1 or 4, H, W)


def _encoder_groups() -> Iterator[int]:
    """The frames of each encoder call: the first frame alone, then groups of 4 (as `AutoencoderKLWan._encode`)."""
    return chain([1], repeat(TIME_FACTOR))


def _checked(chunks: Iterable[torch.Tensor], channels: int) -> Iterator[torch.Tensor]:
    """`chunks`, each checked to be `(1, channels, n, H, W)` with the first chunk's `H, W`."""
    size = None
    for chunk in chunks:
        if chunk.dim() != 5 or chunk.shape[0] != 1 or chunk.shape[1] != channels:
            raise ValueError(f"Wan's VAE encodes chunks (1, {channels}, n, H, W), got {tuple(chunk.shape)}")
        size = size or chunk.shape[3:]
        if chunk.shape[3:] != size:
            raise ValueError(f"every chunk of a clip has its first chunk's size {tuple(size)}, "
                             f"got {tuple(chunk.shape[3:])}")
        yield chunk


def _regroup(chunks: Iterable[torch.Tensor], sizes: Iterator[int]) -> Iterator[torch.Tensor]:
    """The frames of `chunks` (along dim 2) in groups of `sizes` frames, in order; the frames left at the end, fewer
    than the next size, come as one last, shorter group. A chunk is copied only when a group spans several."""
    pending, held, wanted = [], 0, next(sizes)
    for chunk in chunks:
        if chunk.shape[2] == 0:
            continue
        pending.append(chunk)
        held += chunk.shape[2]
        while held >= wanted:
            joined = pending[0] if len(pending) == 1 else torch.cat(pending, dim=2)
            yield joined[:, :, :wanted]
            rest = joined[:, :, wanted:]
            pending, held = ([rest] if rest.shape[2] else []), held - wanted
            wanted = next(sizes)
    if held:
        yield pending[0] if len(pending) == 1 else torch.cat(pending, dim=2)


def _frame_channels(vae) -> int:
    """The channels of the VAE's frames (3): its `in_channels` count a patchified frame's, `patch_size`² times more."""
    return vae.config.in_channels // (vae.config.patch_size or 1) ** 2


def _feature_cache(network: torch.nn.Module) -> list:
    """An empty feature cache for `network`: one slot per causal convolution, as `AutoencoderKLWan.clear_cache`."""
    return [None] * sum(isinstance(m, WanCausalConv3d) for m in network.modules())


def _latent_statistics(vae, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's `latents_mean` and the inverse of its `latents_std`, shaped `(1, z, 1, 1, 1)`."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(device, dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(device, dtype)
    return mean, inverse_std


def _wake(vae) -> None:
    """Bring an offloaded VAE to its execution device, as diffusers' `encode` / `decode` do (`apply_forward_hook`):
    the encoder and decoder are called here directly, which the VAE's own offload hook does not see."""
    hook = getattr(vae, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(vae)
