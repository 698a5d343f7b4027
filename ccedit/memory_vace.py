"""Peak accelerator memory of a Wan-VACE edit, estimated without weights: `estimate_vace_edit_memory`.

The same accounting as `memory.estimate_edit_memory` (see its module docstring: networks on the meta device, every
allocation of one call followed by `LiveTensorBytes`, attention as a fused kernel), over the stages the Wan-VACE
pipeline runs:
  - prompt encoding: one UMT5 call on the padded prompt (512 tokens; the negative prompt is a second call);
  - context encoding: one VAE encode of a chunk of `ENCODE_CHUNK_FRAMES` frames at the working size, beside the
    clip's context latents as they are gathered;
  - denoising: the clip's latents, control latents and prompt embeddings held, and one transformer call on one
    window in latent time (`vace_denoiser.window_prediction`, both guidance halves batched) with the window's
    slices and the fused prediction it makes;
  - decoding: one VAE decode of one latent frame (4 pixel frames), beside the clip's latents.
The transformer and the text encoder are in the edit's dtype, the VAE in float32 (as the kind loads them). The
networks come from a model folder's configs or from the released geometries below, written here as facts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .memory import CLIP_LATENT_COPIES, CUDA_RUNTIME_BYTES, MemoryEstimate, network_bytes, traced_peak_bytes

# The released transformers (diffusers' `WanVACETransformer3DModel` configs of Wan-AI/Wan2.1-VACE-1.3B-diffusers and
# -14B-diffusers). Both read the same UMT5-XXL encoder and the same VAE (`AutoencoderKLWan`'s defaults).
_TRANSFORMER_COMMON = dict(
    patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, vace_in_channels=96,
)
RELEASED_TRANSFORMERS = {
    "1.3B": dict(_TRANSFORMER_COMMON, num_layers=30, num_attention_heads=12, ffn_dim=8960,
                 vace_layers=list(range(0, 30, 2))),
    "14B": dict(_TRANSFORMER_COMMON, num_layers=40, num_attention_heads=40, ffn_dim=13824,
                vace_layers=list(range(0, 40, 5))),
}
UMT5_XXL_ENCODER = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
                        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
RELEASED_VAE: dict = {}  # AutoencoderKLWan's defaults: base_dim 96, z_dim 16, dim_mult (1, 2, 4, 4)

PROMPT_TOKENS = 512  # the padded prompt the pipeline encodes (`pipeline_wan_vace.MAX_SEQUENCE_LENGTH`)
# Pixel frames per VAE call: the context video is encoded in chunks of 4 frames and the clip decoded one latent
# frame (4 pixel frames) at a time, each call beside the causal cache of the frames before it.
ENCODE_CHUNK_FRAMES = 4
DECODE_LATENT_FRAMES = 1


@dataclass
class VACENetworks:
    """A Wan-VACE model's networks on the meta device."""

    transformer: nn.Module
    vae: nn.Module
    text_encoder: nn.Module

    @classmethod
    def released(cls, size: str) -> VACENetworks:
        """The released geometry of `size` (a key of `RELEASED_TRANSFORMERS`)."""
        from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        with torch.device("meta"):
            return cls(WanVACETransformer3DModel(**RELEASED_TRANSFORMERS[size]), AutoencoderKLWan(**RELEASED_VAE),
                       UMT5EncoderModel(UMT5Config(**UMT5_XXL_ENCODER)))

    @classmethod
    def from_folder(cls, folder: Path) -> VACENetworks:
        """The networks of a model folder in diffusers' layout, from its configs."""
        from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
        from transformers import UMT5EncoderModel

        from .pipelines.skeleton import from_config

        return cls(from_config(WanVACETransformer3DModel, folder / "transformer"),
                   from_config(AutoencoderKLWan, folder / "vae"), from_config(UMT5EncoderModel, folder / "text_encoder"))

    @classmethod
    def tiny(cls) -> VACENetworks:
        """The built-in tiny model's networks: built for real (a fraction of a second), then dropped to meta."""
        from .pipelines.tiny_wan import tiny_wan_vace_parts

        parts = tiny_wan_vace_parts()
        return cls(*(parts[name].to("meta") for name in ("transformer", "vae", "text_encoder")))

    def to(self, dtype: torch.dtype) -> VACENetworks:
        """The transformer and the text encoder in `dtype`; the VAE stays float32 (as the kind loads it)."""
        for module, precision in ((self.transformer, dtype), (self.text_encoder, dtype), (self.vae, torch.float32)):
            nn.Module.to(module, precision)
        return self

    def weights(self) -> dict[str, int]:
        return {name: network_bytes(getattr(self, name)) for name in ("transformer", "vae", "text_encoder")}


@dataclass(frozen=True)
class VACEShapes:
    """The shapes of a Wan-VACE edit's calls."""

    calls: int  # the batch of one transformer call: 2 under classifier-free guidance
    frames: int  # pixel frames, fitted to the VAE's 4k+1
    latent_frames: int  # of the clip
    window: int  # latent frames of the longest window
    height: int
    width: int
    h: int  # latent height
    w: int  # latent width
    latent_channels: int
    control_channels: int
    text_dim: int
    dtype: torch.dtype  # the transformer's and text encoder's

    @property
    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def edited_frames_bytes(self) -> int:
        """The decoded uint8 RGB frames (all the fitted frames are decoded, then cut back)."""
        return self.frames * self.height * self.width * 3

    def latent_bytes(self, channels: int, element_size: int = 4) -> int:
        """One tensor of `channels` channels over the clip's latent frames."""
        return channels * self.latent_frames * self.h * self.w * element_size


def vace_shapes(nets: VACENetworks, *, height: int, width: int, num_frames: int, window_length: int | None,
                guidance: bool, dtype: torch.dtype) -> VACEShapes:
    """The shapes of the calls of `nets` for a clip of `num_frames` frames at `height` x `width`, in the windows the
    pipeline runs (`TimeGrid.windows`)."""
    from .pipelines.time_grid import TimeGrid

    downsample = nets.vae.config.temperal_downsample
    spatial = 2 ** len(downsample)  # as diffusers' Wan pipelines derive the VAE's factors
    grid = TimeGrid(2 ** sum(downsample))
    multiple = spatial * nets.transformer.config.patch_size[1]
    if height % multiple or width % multiple:
        raise ValueError(f"frame size must be a multiple of {multiple}, got {width}x{height}")
    fitted = grid.fitted(num_frames)
    window = max(len(w.frames) for w in grid.windows(num_frames, window_length, None))
    config = nets.transformer.config
    return VACEShapes(
        calls=2 if guidance else 1, frames=fitted, latent_frames=grid.latents(fitted), window=window,
        height=height, width=width, h=height // spatial, w=width // spatial, latent_channels=config.in_channels,
        control_channels=config.vace_in_channels, text_dim=config.text_dim, dtype=dtype,
    )


def window_call_bytes(transformer: nn.Module, shapes: VACEShapes, *, device_type: str) -> int:
    """Working memory of one window: its slices of the clip's latents (in the transformer's dtype) and control
    latents, the transformer call (`window_prediction`) and the weighted float32 prediction it is fused with."""
    from .pipelines.vace_denoiser import window_prediction

    s = shapes
    meta = dict(device="meta", dtype=s.dtype)
    text = torch.empty(s.calls, PROMPT_TOKENS, s.text_dim, **meta)  # held across denoising: not this call's
    scale = torch.ones(len(transformer.config.vace_layers), **meta)

    def window_call():
        latents = torch.empty(s.calls, s.latent_channels, s.window, s.h, s.w, **meta)
        control = torch.empty(1, s.control_channels, s.window, s.h, s.w, **meta)
        prediction = window_prediction(transformer, latents, torch.full((), 500.0, device="meta"), text, control,
                                       scale).float()
        return prediction * torch.ones(1, 1, s.window, 1, 1, device="meta")

    return traced_peak_bytes(window_call, device_type)


def prompt_call_bytes(text_encoder: nn.Module, *, device_type: str) -> int:
    """Working memory of encoding one padded prompt."""

    def prompt_call():
        ids = torch.zeros(1, PROMPT_TOKENS, dtype=torch.long, device="meta")
        # No padding mask: on the meta device it cannot be read, and the one the prompt makes is 512x512 booleans.
        return text_encoder(ids).last_hidden_state

    return traced_peak_bytes(prompt_call, device_type)


def encode_chunk_bytes(vae: nn.Module, shapes: VACEShapes, *, device_type: str) -> int:
    """Working memory of encoding one chunk of the context video (after the first frame, which Wan's VAE encodes
    alone): the chunk in float32 and the VAE call with its causal cache."""
    s = shapes

    def encode_chunk():
        frames = torch.empty(1, 3, 1 + ENCODE_CHUNK_FRAMES, s.height, s.width, device="meta")
        return vae.encode(frames).latent_dist.mode()

    return traced_peak_bytes(encode_chunk, device_type)


def decode_frame_bytes(vae: nn.Module, shapes: VACEShapes, *, device_type: str) -> int:
    """Working memory of decoding one latent frame after the first (4 pixel frames), with its causal cache."""
    s = shapes

    def decode_frame():
        latents = torch.empty(1, s.latent_channels, 1 + DECODE_LATENT_FRAMES, s.h, s.w, device="meta")
        return vae.decode(latents, return_dict=False)[0]

    return traced_peak_bytes(decode_frame, device_type)


def held_tensors(shapes: VACEShapes) -> dict[str, int]:
    """The tensors held across the denoising stage, by term."""
    s = shapes
    return {
        # float32, as `memory.CLIP_LATENT_COPIES` counts them for every sampler
        "clip latents and scheduler state": CLIP_LATENT_COPIES * s.latent_bytes(s.latent_channels) * s.calls // 2,
        "control latents": s.latent_bytes(s.control_channels, s.element_size),
        "prompt embeddings": s.calls * PROMPT_TOKENS * s.text_dim * s.element_size,
    }


def stage_terms(weights: dict[str, int], held: dict[str, int], working: dict[str, int], shapes: VACEShapes, *,
                cpu_offload: bool, device_type: str) -> dict[str, dict[str, int]]:
    """Each stage's bytes by term: the weights resident in it (under model offload, only the stage's network), the
    tensors held across it and one call's working memory."""
    s = shapes
    resident = lambda name: weights[name] if cpu_offload else sum(weights.values())  # noqa: E731
    terms = {
        "prompt encoding": {"weights": resident("text_encoder"), "prompt encoding": working["prompt encoding"]},
        # The kept and generated parts' float32 latents are gathered, then joined with the folded mask.
        "context encoding": {"weights": resident("vae"), "context latents": s.latent_bytes(2 * s.latent_channels),
                             "control latents": held["control latents"],
                             "context encoding": working["context encoding"]},
        "denoising": {"weights": resident("transformer"), **held, "window call": working["window call"]},
        "decoding": {"weights": resident("vae"), "clip latents": s.latent_bytes(s.latent_channels),
                     "VAE decode": working["VAE decode"]},
    }
    if device_type == "cpu":  # the decoded uint8 frames are then in the same memory
        terms["decoding"]["edited frames"] = s.edited_frames_bytes
    return terms


def estimate_vace_edit_memory(
    networks: VACENetworks,
    *,
    height: int,
    width: int,
    num_frames: int,
    window_length: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    guidance: bool = True,
    cpu_offload: bool = False,
    device_type: str = "cuda",
    **ignored,
) -> MemoryEstimate:
    """Estimate a Wan-VACE edit's peak accelerator memory (see the module docstring).

    Args:
        networks (`VACENetworks`): the model's networks on the meta device (not changed: a copy is cast).
        height, width: frame size in pixels; num_frames: frames of the clip; window_length: pixel frames per
            window (None: the whole clip).
        dtype: the transformer's and text encoder's precision. guidance: classifier-free guidance.
        cpu_offload: only the running stage's network on the device. device_type: `cuda` or `cpu`.
        ignored: the settings of other kinds' estimates (keyframes act through the context video, at no cost of
            their own; the VAE decodes one latent frame at a time whatever `vae_slicing` says).
    """
    nets = copy.deepcopy(networks).to(dtype)
    shapes = vace_shapes(nets, height=height, width=width, num_frames=num_frames, window_length=window_length,
                         guidance=guidance, dtype=dtype)
    weights = nets.weights()
    working = {
        "prompt encoding": prompt_call_bytes(nets.text_encoder, device_type=device_type),
        "context encoding": encode_chunk_bytes(nets.vae, shapes, device_type=device_type),
        "window call": window_call_bytes(nets.transformer, shapes, device_type=device_type),
        "VAE decode": decode_frame_bytes(nets.vae, shapes, device_type=device_type),
    }
    held = held_tensors(shapes)
    return MemoryEstimate(
        stage_terms=stage_terms(weights, held, working, shapes, cpu_offload=cpu_offload, device_type=device_type),
        weights=weights, held=held, working=working, runtime_bytes=CUDA_RUNTIME_BYTES,
        edited_frames_bytes=shapes.edited_frames_bytes, dtype=dtype, device_type=device_type,
        cpu_offload=cpu_offload, vae_slicing=True,
    )
