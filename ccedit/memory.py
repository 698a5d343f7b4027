"""Peak accelerator memory of an edit, estimated without weights: `estimate_edit_memory`.

The estimate is the largest of the edit's stages (prompt encoding, hint encoding, denoising, decoding), each being
the weights resident in that stage, the tensors the pipeline holds across it (clip latents and scheduler state,
the clip's ControlNet hint encodings, appearance residuals) and the working memory of one call of the stage's
network at its real shapes: one window call of the trident (both guidance halves; the pipeline's own call,
`clip_denoiser.window_prediction`), one hint-encoding chunk, one VAE decode chunk.

The working memory is not a formula: the networks are built on PyTorch's meta device from their configs (no weight
is allocated or read) and run on meta tensors, while a dispatch mode follows every tensor the call allocates until
it is freed (`LiveTensorBytes`). That is the same accounting as CUDA's `max_memory_allocated`, for the code as it
is, so a change of the networks changes the estimate with it. Attention is accounted as a fused kernel (flash or
memory-efficient attention: the output only), which is what `scaled_dot_product_attention` runs on CUDA in half
precision and on the CPU; the meta device alone would materialise the full attention matrix.

Not counted: the CUDA context and kernel workspaces (cuBLAS, cuDNN: a few hundred MiB, reported separately as
`runtime_bytes`), fragmentation of the caching allocator, the host side (decoded source frames, structure maps),
which the memory guard adds (`memory_guard.host_memory_terms`), and the structure annotators' networks (a
depth estimator), which make the maps before denoising, beside the loaded model, and leave the accelerator once
the maps are made (`Annotator.release`). Traced the same way, CCEdit's depth estimator (DPT-Hybrid, float16, 4
frames per pass at the working size) needs 0.23 GiB of weights and 0.9 GiB of working memory at 512x768 (2.3 GiB
at 768x1280), where one denoising window of the keyframe model needs 4.1 GiB at 512x768: that stage stays below
the denoising peak. The decoded output frames are counted (`edited_frames_bytes`): on the host, which on a CPU run
is the device, so they are then a term of the decoding stage.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

if TYPE_CHECKING:
    from .models import TridentModel
    from .pipelines.skeleton import NetworkSkeleton


# CUDA context, cuBLAS/cuDNN workspaces: not tensors of the edit, but on the card. Typical for a recent driver.
CUDA_RUNTIME_BYTES = 600 * 2**20
# Clip-sized float32 latent tensors alive during denoising: latents, the noise, the model input of both halves,
# the fused prediction, the guided prediction, the scheduler's denoised estimate and its step temporaries.
CLIP_LATENT_COPIES = 8
GIB = 2**30


class LiveTensorBytes(TorchDispatchMode):
    """Track the bytes of tensors allocated by ops run under this mode until Python frees them; keep the peak.

    Allocations are keyed by storage, so views keep their base's bytes alive and are never counted twice. Tensors
    made before the mode (weights, inputs) are not counted: callers add them.
    """

    def __init__(self, conv_transient: bool = False):
        super().__init__()
        self.conv_transient = conv_transient
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage key -> [bytes, live tensors]

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[key]

    def _track(self, tensor: torch.Tensor, new: bool) -> None:
        key = tensor.untyped_storage()._cdata
        entry = self._refs.get(key)
        if entry is None:
            if not new:
                return  # a view of something made outside the mode (a weight, an input)
            entry = self._refs[key] = [tensor.untyped_storage().nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.conv_transient and func is torch.ops.aten.convolution.default:
            # oneDNN (CPU) computes a convolution into its own buffer and copies it out: one output more, briefly.
            self.peak = max(self.peak, self.live + 2 * out.untyped_storage().nbytes())
        inputs = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in inputs:
                self._track(tensor, new=not func.is_view)
        return out


@contextlib.contextmanager
def _fused_attention():
    """`F.scaled_dot_product_attention` as a fused kernel allocates it: the output (and a row statistic)."""
    original = F.scaled_dot_product_attention

    def fused(query, key, value, *args, **kwargs):
        statistic = query.new_empty(query.shape[:-1], dtype=torch.float32)  # logsumexp of flash attention
        del statistic
        return query.new_empty(*query.shape[:-1], value.shape[-1])

    F.scaled_dot_product_attention = fused  # diffusers and ccedit look it up on the module at call time
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def traced_peak_bytes(fn: Callable[[], object], device_type: str = "cuda") -> int:
    """Peak bytes of the tensors `fn` allocates on the meta device (its inputs and weights excluded), as it would
    allocate them on `device_type`."""
    tracker = LiveTensorBytes(conv_transient=device_type == "cpu")
    with torch.no_grad(), _fused_attention(), tracker:
        result = fn()
        del result
    return tracker.peak


def measured_peak_bytes(fn: Callable[[], object]) -> int:
    """High-water mark of the bytes torch's CPU allocator hands out while `fn` runs, on top of what existed before
    (the CPU counterpart of CUDA's `max_memory_allocated`), from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # One "[memory]" event per allocation (+bytes) or free (-bytes); frees of older blocks are not reported.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    peak = current = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def network_bytes(module: torch.nn.Module | None) -> int:
    """The weights and buffers of `module` in bytes (0 for None)."""
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


@dataclass
class MemoryEstimate:
    """Bytes of an edit's peak accelerator memory and where they go.

    Args:
        stage_terms (`dict[str, dict[str, int]]`): for each stage, its bytes by term: `weights` (resident in the
            stage), the tensors held across it (the keys of `held`, or `clip latents` while decoding) and one
            call's working memory (the keys of `working`); on the CPU the decoding stage also holds the
            `edited frames`. A stage's peak is the sum of its terms.
        weights (`dict[str, int]`): every network's weights, resident or not.
        held (`dict[str, int]`): tensors held while denoising. working (`dict[str, int]`): one call's working
            memory, by network call.
        runtime_bytes (`int`): the CUDA context and workspaces, on a GPU only.
        edited_frames_bytes (`int`): the decoded uint8 frames, the edit's output: on the host (on a CPU run, in the
            decoding stage's `edited frames`).
        dtype, device_type, cpu_offload, vae_slicing: the settings estimated for.
    """

    stage_terms: dict[str, dict[str, int]]
    weights: dict[str, int]
    held: dict[str, int]
    working: dict[str, int]
    runtime_bytes: int
    edited_frames_bytes: int
    dtype: torch.dtype
    device_type: str
    cpu_offload: bool
    vae_slicing: bool
    notes: list[str] = field(default_factory=list)

    @property
    def stages(self) -> dict[str, int]:
        """The peak bytes of each stage."""
        return {name: sum(terms.values()) for name, terms in self.stage_terms.items()}

    @property
    def stage(self) -> str:
        """The stage of the peak."""
        stages = self.stages
        return max(stages, key=stages.get)

    @property
    def peak_bytes(self) -> int:
        return self.stages[self.stage]

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GIB

    def peak_terms(self) -> dict[str, int]:
        """The peak stage's bytes by term (they sum to `peak_bytes`)."""
        return dict(self.stage_terms[self.stage])

    def lines(self) -> list[str]:
        mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
        out = [f"estimated peak accelerator memory: {self.peak_gb:.2f} GiB (in {self.stage}; plus about "
               f"{mib(self.runtime_bytes)} of CUDA runtime on a GPU)"]
        out.append("  weights: " + ", ".join(f"{k} {mib(v)}" for k, v in self.weights.items() if v))
        out.append("  stage peaks: " + ", ".join(f"{k} {mib(v)}" for k, v in self.stages.items()))
        out.append("  held while denoising: " + ", ".join(f"{k} {mib(v)}" for k, v in self.held.items()))
        out.append("  working memory of one call: " + ", ".join(f"{k} {mib(v)}" for k, v in self.working.items()))
        out.extend(f"  note: {n}" for n in self.notes)
        return out


@dataclass(frozen=True)
class CallShapes:
    """The shapes of an edit's network calls: latent sizes, the batch of one call, the text and hint widths."""

    batch: int  # prompts edited together
    calls: int  # the batch of one network call: `batch`, twice over with classifier-free guidance
    num_frames: int  # frames of the clip
    window: int  # frames per window call
    height: int  # frame height in pixels
    width: int  # frame width in pixels
    h: int  # latent height
    w: int  # latent width
    latent_channels: int
    tokens: int  # prompt tokens (the text encoder's length)
    context_dim: int  # the UNet's cross-attention width
    hint_channels: tuple[int, ...]  # per ControlNet, the channels of its hint encoding
    dtype: torch.dtype  # the networks' precision

    @property
    def meta(self) -> dict:
        return dict(device="meta", dtype=self.dtype)

    @property
    def element_size(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    @property
    def hint_bytes(self) -> int:
        """The clip's hint encodings, every ControlNet's."""
        return sum(self.hint_channels) * self.num_frames * self.h * self.w * self.element_size

    @property
    def clip_latent_bytes(self) -> int:
        """One float32 copy of the clip's latents."""
        return self.batch * self.latent_channels * self.num_frames * self.h * self.w * 4

    @property
    def edited_frames_bytes(self) -> int:
        """The decoded uint8 RGB frames of the clip."""
        return self.batch * self.num_frames * self.height * self.width * 3


def call_shapes(nets: NetworkSkeleton, *, height: int, width: int, num_frames: int, window_length: int | None,
                batch: int, guidance: bool, dtype: torch.dtype) -> CallShapes:
    """The shapes of the calls of `nets` for a clip of `num_frames` frames at `height` x `width`."""
    factor = 2 ** (len(nets.vae.config.block_out_channels) - 1)
    if height % factor or width % factor:
        raise ValueError(f"frame size must be a multiple of {factor}, got {width}x{height}")
    return CallShapes(
        batch=batch, calls=batch * (2 if guidance else 1), num_frames=num_frames,
        window=num_frames if window_length is None else min(window_length, num_frames),
        height=height, width=width, h=height // factor, w=width // factor,
        latent_channels=nets.unet.config.in_channels, tokens=nets.text_encoder.config.max_position_embeddings,
        context_dim=nets.unet.config.cross_attention_dim,
        hint_channels=tuple(net.config.block_out_channels[0] for net in nets.controlnets), dtype=dtype,
    )


def network_weights(nets: NetworkSkeleton) -> dict[str, int]:
    """Every network's weights (and buffers) in bytes, resident or not."""
    return {
        "unet": network_bytes(nets.unet), "temporal": network_bytes(nets.temporal),
        "controlnet": sum(network_bytes(c) for c in nets.controlnets), "appearance": network_bytes(nets.appearance),
        "vae": network_bytes(nets.vae), "text_encoder": network_bytes(nets.text_encoder),
    }


def window_call_bytes(trident: TridentModel, shapes: CallShapes, *, keyframe: bool, device_type: str) -> int:
    """Working memory of one window call, traced through the pipeline's own call (`clip_denoiser.window_prediction`):
    appearance residuals (once per timestep, held across the windows; a SparseCtrl branch runs inside the call),
    the window's hints sliced from the clip's and the network call itself, plus the model input of the call."""
    from .models import centre_frame
    from .pipelines import clip_denoiser
    from .pipelines.conditions import WindowConditions

    s, meta = shapes, shapes.meta
    per_timestep = keyframe and trident.appearance_per_timestep
    centre = centre_frame(s.window)
    # One keyframe at the window's centre, where the planner puts a keyframe's own window; none without keyframes.
    acting = ((0,), (centre,)) if keyframe else ((), ())
    part = WindowConditions([], *acting, anchor=centre)

    def window_call():
        sample = torch.empty(s.calls, s.latent_channels, s.window, s.h, s.w, **meta)
        text = torch.empty(s.calls, s.tokens, s.context_dim, **meta)
        hints = [torch.empty(1, c, s.window, s.h, s.w, **meta)[:, :, :].clone() for c in s.hint_channels]
        keyframe_latents = torch.empty(1, s.latent_channels, s.h, s.w, **meta) if keyframe else None
        appearance = None
        if per_timestep:
            appearance = trident.appearance_residuals(keyframe_latents, torch.tensor(500), range(1))
        return clip_denoiser.window_prediction(
            trident, sample, torch.full((s.calls,), 500, device="meta"), text, part, structure_hints=hints,
            structure_scales=[1.0] * len(s.hint_channels), appearance=appearance,
            keyframe_latents=None if per_timestep else keyframe_latents, appearance_scale=1.0,
        )

    model_input = s.calls * s.latent_channels * s.window * s.h * s.w * s.element_size
    return traced_peak_bytes(window_call, device_type) + model_input


def hint_chunk_bytes(trident: TridentModel, shapes: CallShapes, *, device_type: str) -> int:
    """Working memory of encoding one chunk of `ENCODE_CHUNK_FRAMES` frames' structure maps."""
    from .pipelines.clip_denoiser import ENCODE_CHUNK_FRAMES

    s = shapes

    def hint_chunk():
        maps = [torch.empty(1, 3, min(ENCODE_CHUNK_FRAMES, s.num_frames), s.height, s.width, **s.meta)
                for _ in s.hint_channels]
        return trident.encode_structure(maps)

    return traced_peak_bytes(hint_chunk, device_type)


def decode_chunk_bytes(vae: torch.nn.Module, shapes: CallShapes, *, decode_chunk_size: int, device_type: str) -> int:
    """Working memory of one VAE decode of `decode_chunk_size` frames."""
    s = shapes

    def decode_chunk():
        latents = torch.empty(min(decode_chunk_size, s.num_frames * s.batch), vae.config.latent_channels, s.h, s.w,
                              **s.meta)
        return vae.decode(latents).sample

    return traced_peak_bytes(decode_chunk, device_type)


def held_tensors(trident: TridentModel, shapes: CallShapes, *, guidance: bool, keep_hints: bool,
                 keyframe: bool) -> dict[str, int]:
    """The tensors held across the denoising stage, by term."""
    from .pipelines.clip_denoiser import APPEARANCE_TIMESTEPS_PER_CALL

    s = shapes
    held = {
        "clip latents and scheduler state": CLIP_LATENT_COPIES * s.clip_latent_bytes * (2 if guidance else 1) // 2,
        "clip hint encodings": s.hint_bytes if keep_hints else 0,
    }
    if keyframe and trident.appearance_per_timestep:
        # the appearance branch runs for several coming timesteps at once; the window call holds one
        with torch.no_grad():
            step = trident.appearance_residuals(torch.empty(1, s.latent_channels, s.h, s.w, **s.meta),
                                                torch.tensor(500), [0])
        step_bytes = sum(t.numel() * t.element_size() for t in (*step.down, step.mid))
        held["appearance residuals of the next timesteps"] = (APPEARANCE_TIMESTEPS_PER_CALL - 1) * step_bytes
    return held


def stage_terms(weights: dict[str, int], held: dict[str, int], working: dict[str, int], shapes: CallShapes, *,
                cpu_offload: bool, device_type: str) -> dict[str, dict[str, int]]:
    """Each stage's bytes by term: the weights resident in it, the tensors held across it and one call's working
    memory."""
    denoising_networks = ("unet", "temporal", "controlnet", "appearance")
    others = 0 if cpu_offload else weights["vae"] + weights["text_encoder"]
    denoise_weights = sum(weights[k] for k in denoising_networks) + others
    decode_weights = weights["vae"] if cpu_offload else sum(weights.values())
    terms = {
        "prompt encoding": {"weights": weights["text_encoder"] if cpu_offload else sum(weights.values())},
        "hint encoding": {"weights": denoise_weights, "clip hint encodings": held["clip hint encodings"],
                          "hint encoding": working["hint encoding"]},
        "denoising": {"weights": denoise_weights, **held, "window call": working["window call"]},
        # Frames are decoded chunk by chunk into uint8 on the host; the clip's latents stay on the device.
        "decoding": {"weights": decode_weights, "clip latents": shapes.clip_latent_bytes,
                     "VAE decode": working["VAE decode"]},
    }
    if device_type == "cpu":  # the decoded uint8 frames are then in the same memory
        terms["decoding"]["edited frames"] = shapes.edited_frames_bytes
    return terms


def estimate_edit_memory(
    *,
    height: int,
    width: int,
    num_frames: int,
    window_length: int | None = None,
    dtype: torch.dtype = torch.float16,
    guidance: bool = True,
    keyframe: bool = False,
    num_controlnets: int = 1,
    cpu_offload: bool = False,
    batch: int = 1,
    decode_chunk_size: int = 8,
    vae_slicing: bool = False,
    geometry: str = "sd15",
    networks: NetworkSkeleton | None = None,
    hint_cache_bytes: int | None = None,
    device_type: str = "cuda",
) -> MemoryEstimate:
    """Estimate an edit's peak accelerator memory (see the module docstring for what is and is not counted).

    Args:
        height, width: frame size in pixels (multiples of the VAE's factor).
        num_frames: frames of the clip; window_length: frames per network call (default: the whole clip).
        dtype: the networks' precision. guidance: classifier-free guidance (two halves per call).
        keyframe: a keyframe acts (the appearance branch runs; for a named geometry, the keyframe model is built:
            appearance branch and cross-frame attention).
        num_controlnets: structure ControlNets of a named geometry. cpu_offload: only the running stage's networks
            on the device.
        batch: prompts edited together. decode_chunk_size: frames per VAE decode.
        vae_slicing: the VAE decodes the frames of a chunk one at a time (`enable_vae_slicing`).
        device_type: `cuda` or `cpu` (where convolutions need a transient buffer, and the host is the device).
        geometry: a name of `ccedit.pipelines.tiny.GEOMETRIES`: `tiny`, `medium` or `sd15` (the released size);
            the VAE and text encoder are those of the same name.
        networks (`NetworkSkeleton`, *optional*): the model's own networks on the meta device
            (`kinds.model_skeleton`), instead of a named geometry's; cast to `dtype` in place.
    """
    from .models.trident import build_trident
    from .pipelines.clip_denoiser import HINT_CACHE_BYTES
    from .pipelines.skeleton import geometry_skeleton

    nets = (networks or geometry_skeleton(geometry, keyframe, num_controlnets)).to(dtype)
    shapes = call_shapes(nets, height=height, width=width, num_frames=num_frames, window_length=window_length,
                         batch=batch, guidance=guidance, dtype=dtype)
    if vae_slicing:
        nets.vae.enable_slicing()
    with torch.device("meta"):  # a main branch may assemble a model around the base (AnimateDiff's motion UNet)
        trident: TridentModel = build_trident(nets.unet, nets.temporal, nets.controlnets, nets.appearance).eval()
    keyframe = keyframe and nets.appearance is not None
    keep_hints = shapes.hint_bytes <= (HINT_CACHE_BYTES if hint_cache_bytes is None else hint_cache_bytes)
    weights = network_weights(nets)
    working = {
        "window call": window_call_bytes(trident, shapes, keyframe=keyframe, device_type=device_type),
        "hint encoding": hint_chunk_bytes(trident, shapes, device_type=device_type) if keep_hints else 0,
        "VAE decode": decode_chunk_bytes(nets.vae, shapes, decode_chunk_size=decode_chunk_size,
                                         device_type=device_type),
    }
    held = held_tensors(trident, shapes, guidance=guidance, keep_hints=keep_hints, keyframe=keyframe)
    notes = []
    if not keep_hints:
        notes.append("the clip's hint encodings exceed the cache budget: each window call encodes its own")
    return MemoryEstimate(
        stage_terms=stage_terms(weights, held, working, shapes, cpu_offload=cpu_offload, device_type=device_type),
        weights=weights, held=held, working=working, runtime_bytes=CUDA_RUNTIME_BYTES,
        edited_frames_bytes=shapes.edited_frames_bytes, dtype=dtype, device_type=device_type,
        cpu_offload=cpu_offload, vae_slicing=vae_slicing, notes=notes,
    )
