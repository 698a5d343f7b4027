"""`CCEditPipeline`: text- and keyframe-guided video editing with the CCEdit trident."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import PIL.Image
import torch
from einops import rearrange
from diffusers import AutoencoderKL, ControlNetModel, DiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from ..annotators.maps import is_held, maps_problem
from ..errors import InvalidInputError
from ..models import AppearanceEncoder, CCEditTemporalAdapter, TridentModel, build_trident
from .cpu_tuning import onednn_linear
from ..schedulers import SAMPLING_CONVENTIONS, set_sampling_timesteps
from .clip_denoiser import ClipDenoiser
from .conditions import Keyframes, TridentConditions, check_keyframe_indices, default_keyframe_index, keyframes_act
from .denoise import KnownLatents, denoise, prepare_initial_latents, sdedit_start, sdedit_timesteps
from .pipeline_calls import (
    FRAME_PROCESSOR, check_unit_range, check_video, finished_time, peak_memory_bytes, step_end_callback,
    unit_to_uint8, video_as_uint8, video_size,
)
from .recording import ConditionsRecord
from .region import SourceRegion, check_mask, composite, latent_mask
from .windows import (
    WINDOW_NOISE,
    check_window,
    fusion_weights,
    plan_passes,
    repeat_window_noise,
)

logger = logging.getLogger(__name__)

PRIORS = ("none", "keyframe", "video")

KeyframeImage = PIL.Image.Image | np.ndarray | torch.Tensor


def keyframe_prior(keyframes: Keyframes, num_frames: int) -> torch.Tensor:
    """The anchor prior's `z` for `prior="keyframe"`: each frame gets its nearest keyframe's latent, `(4, T, h, w)`."""
    nearest = [min(range(len(keyframes)), key=lambda k: abs(keyframes.indices[k] - f)) for f in range(num_frames)]
    return keyframes.latents[nearest].transpose(0, 1)


def _cpu_kernels(call: Callable) -> Callable:
    """Run a pipeline method with the CPU tuning (`cpu_tuning.py`) when it is enabled and the method executes on the
    CPU.

    Not once the networks are compiled: the compiler picks its own kernels, and compiled code guards on the active
    function modes, so a network called both inside and outside the pipeline (the automatic keyframe's ControlNet,
    a user's own call) would compile twice.
    """

    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        eager_cpu = self._execution_device.type == "cpu" and not self.networks_compiled()
        with onednn_linear(self._cpu_tuning and eager_cpu):
            return call(self, *args, **kwargs)

    return wrapper


@dataclass
class CCEditPipelineOutput(BaseOutput):
    """
    Args:
        frames: the edited videos: `np.ndarray` uint8 `(batch, frames, height, width, 3)` for `output_type="np"`,
            `torch.Tensor` `(batch, frames, 3, height, width)` in `[0, 1]` for `"pt"`, lists of PIL images for
            `"pil"`, latents `(batch, 4, frames, h, w)` for `"latent"`.
        timings: seconds spent per stage (`encode_prompt`, `encode_keyframe`, `denoise`, `decode`, `total`).
        peak_memory_bytes: peak accelerator memory of the call on CUDA; elsewhere the process's peak resident memory
            so far (max RSS, which includes everything the process held before the call), or None where unknown.
        windows: the number of windows of each denoising pass.
        conditions: with `record_conditions=True`, what each network received (`ConditionsRecord`).
    """

    frames: np.ndarray | torch.Tensor | list
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    windows: list[int] = field(default_factory=list)
    conditions: ConditionsRecord | None = None


def _as_unit_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames `(..., H, W, 3)` as float `(..., 3, H, W)` in [0, 1], the input diffusers' processor expects.

    Converted here, not handed to diffusers as a float array: its array path stacks a single image into a new batch
    whose memory layout differs from the one the VAE has always been given, and the VAE's convolutions would then
    round differently.
    """
    return torch.from_numpy(frames).movedim(-1, -3).float() / 255


def _video_chunk_to_tensor(video, start: int, stop: int) -> torch.Tensor:
    """Frames `start:stop` as float `(n, 3, H, W)` in [-1, 1]: the clip itself stays uint8 (or as given)."""
    chunk = video[start:stop]
    return FRAME_PROCESSOR.preprocess(_as_unit_tensor(chunk) if isinstance(chunk, np.ndarray) else chunk.float())


def _image_to_tensor(image) -> torch.Tensor:
    """PIL image, uint8 `(H, W, 3)` array or float `(3, H, W)` tensor in [0, 1] -> `(1, 3, H, W)` in [-1, 1]."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InvalidInputError(f"`keyframe` as an array must be uint8 (height, width, 3), got {image.dtype} {image.shape}")
        image = _as_unit_tensor(image)
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise InvalidInputError("`keyframe` must be a PIL image, a uint8 (height, width, 3) array or a (3, height, width) tensor")
    check_unit_range("keyframe", image)
    return FRAME_PROCESSOR.preprocess(image.float())


class CCEditPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    r"""Edit a video with a text prompt, keeping its structure, optionally spreading the look of an edited keyframe.

    CCEdit (Feng et al., CVPR 2024): a frozen SD-1.5 UNet with learnable temporal layers (main branch), ControlNets
    on per-frame structure maps (structure branch) and an encoder of the edited keyframe (appearance branch).

    Args:
        vae (`AutoencoderKL`): image autoencoder; frames are encoded and decoded one by one.
        text_encoder (`CLIPTextModel`), tokenizer (`CLIPTokenizer`): the text branch of SD-1.5.
        unet (`UNet2DConditionModel`): the frozen base of the main branch.
        temporal (`CCEditTemporalAdapter`): the temporal layers made for `unet`.
        controlnet (`ControlNetModel` or list, *optional*): structure ControlNets; each is fed its own maps.
        scheduler: any diffusers scheduler, or ccedit's `DPMPP2SAncestralScheduler`.
        appearance (`AppearanceEncoder`, *optional*): the keyframe encoder; without it only text guides the edit.
        sampling_convention (`str`): `"ccedit"` (the original's timesteps and initial noise scale) or `"diffusers"`
            (the scheduler's own); saved with the pipeline.
    """

    # The order of diffusers' model offload; `enable_model_cpu_offload` hooks the main branch (unet + temporal) whole.
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["appearance", "controlnet"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        temporal: CCEditTemporalAdapter,
        controlnet: ControlNetModel | Sequence[ControlNetModel] | None,
        scheduler,
        appearance: AppearanceEncoder | None = None,
        sampling_convention: str = "ccedit",
    ):
        super().__init__()
        if sampling_convention not in SAMPLING_CONVENTIONS:
            raise ValueError(f"`sampling_convention` must be one of {SAMPLING_CONVENTIONS}, got {sampling_convention!r}")
        if isinstance(controlnet, (list, tuple)):
            from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

            if len(controlnet) == 0:
                controlnet = None  # no structure branch
            else:
                controlnet = MultiControlNetModel(list(controlnet)) if len(controlnet) > 1 else controlnet[0]
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, temporal=temporal,
            controlnet=controlnet, scheduler=scheduler, appearance=appearance,
        )
        # How this model samples belongs to the model, saved in model_index.json with it (see `ccedit.schedulers`).
        self.register_to_config(sampling_convention=sampling_convention)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._offload_device: torch.device | None = None
        self._side_branch_hooks: list = []
        self._cpu_tuning = False  # opt-in: `enable_cpu_tuning`

    # ------------------------------------------------------------------ components and devices

    @property
    def controlnets(self) -> list[ControlNetModel]:
        if self.controlnet is None:
            return []
        return list(getattr(self.controlnet, "nets", [self.controlnet]))

    @property
    def main_dtype(self) -> torch.dtype:
        """The precision of the main branch (what an edit's sidecar records)."""
        return self.unet.dtype

    def edit_keyframe(self, prompt: str, frame: np.ndarray, structure_maps: Sequence[torch.Tensor], **kwargs) -> np.ndarray:
        """One frame edited from `prompt` under its structure maps (`keyframe_edit.edit_keyframe`, which documents
        the arguments): how every ccedit pipeline makes an automatic keyframe."""
        from .keyframe_edit import edit_keyframe

        return edit_keyframe(self, prompt, frame, structure_maps, **kwargs)

    @property
    def size_multiple(self) -> int:
        """Frame sizes must be multiples of this: the VAE's factor. The main branch and the side branches take any
        latent size (each upsampling returns to its skip's size), so the UNet's downsamplings add no constraint."""
        return self.vae_scale_factor

    def trident(self) -> TridentModel:
        """The network over this pipeline's components; the main branch is chosen by the temporal layers' type.

        Built once per set of components: some main branches (AnimateDiff's) assemble a model around the base.
        """
        key = (id(self.unet), id(self.temporal), tuple(map(id, self.controlnets)), id(self.appearance))
        cached = getattr(self, "_trident", None)
        if cached is None or cached[0] != key:
            self._trident = (key, build_trident(self.unet, self.temporal, self.controlnets, self.appearance))
        return self._trident[1]

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Keep the networks on the CPU; accelerate's offload hooks move each to `device` when it is called.

        As diffusers' own model offload, with one difference: the main branch (base UNet + temporal layers) is
        hooked as one module, because the trident calls the base UNet's layers and never its `forward`, where a hook
        on the UNet would sit. The chain is text encoder -> main branch -> VAE (each moves the one before it back);
        the ControlNets and the appearance encoder, called at every step beside the main branch, stay on `device`
        from their first call until the decoding starts.
        """
        from accelerate import cpu_offload_with_hook

        self.remove_all_hooks()
        if device is None:
            if not torch.cuda.is_available():
                raise RuntimeError("`enable_model_cpu_offload` needs an accelerator; none was found")
            device = "cuda"
        device = torch.device(device)
        self._offload_device = torch.device(device.type, gpu_id if gpu_id is not None else (device.index or 0))
        self.to("cpu")
        hooks, previous = [], None
        for module in (self.text_encoder, self.trident().main, self.vae):
            _, previous = cpu_offload_with_hook(module, self._offload_device, prev_module_hook=previous)
            hooks.append(previous)
        self._side_branch_hooks = [
            cpu_offload_with_hook(module, self._offload_device)[1] for module in self._side_branches()
        ]
        self._all_hooks = hooks + self._side_branch_hooks

    def remove_all_hooks(self) -> None:
        super().remove_all_hooks()  # the components' hooks
        from accelerate.hooks import remove_hook_from_module

        trident = getattr(self, "_trident", None)
        if trident is not None:
            remove_hook_from_module(trident[1].main, recurse=True)
        self._all_hooks, self._side_branch_hooks, self._offload_device = [], [], None

    @property
    def offload_device(self) -> torch.device | None:
        """The accelerator that model CPU offload moves networks to; None without offload."""
        return self._offload_device

    def compile_networks(self, **kwargs) -> None:
        """Compile the networks called at every step (main branch, ControlNets, appearance encoder) in place with
        `torch.compile(**kwargs)` (e.g. `mode="max-autotune"`, `backend=...`).

        The first call of each shape compiles (tens of seconds); later calls of the same shapes run the compiled
        code. The main branch is compiled as one module, not the base UNet: its forward is the one that runs.
        """
        for module in self._step_networks():
            module.compile(**kwargs)

    def networks_compiled(self) -> bool:
        """Whether a network called at every step runs compiled (by `compile_networks()` or its own `compile()`)."""
        return any(module._compiled_call_impl is not None for module in self._step_networks())

    def _step_networks(self) -> list[torch.nn.Module]:
        """The networks called at every step: the main branch, the ControlNets and the appearance encoder."""
        return [self.trident().main, *self._side_branches()]

    def _side_branches(self) -> list[torch.nn.Module]:
        """The networks called at every step beside the main branch: the ControlNets and the appearance encoder."""
        return [m for m in (*self.controlnets, self.appearance) if m is not None]

    def enable_channels_last(self) -> None:
        """Store the convolutional networks' weights channels-last (NHWC), so their convolutions run in that layout.

        On GPUs cuDNN's half-precision convolutions are often faster so (`tools/check_cuda.py` measures it); on the
        CPU they are slower or mixed, hence off by default. The edit is the same up to the rounding of sums taken in
        another order. A main branch built around the UNet shares its layers, so it follows.
        """
        self._set_convolution_layout(torch.channels_last)

    def disable_channels_last(self) -> None:
        """Back to the default contiguous (NCHW) layout."""
        self._set_convolution_layout(torch.contiguous_format)

    def _set_convolution_layout(self, memory_format: torch.memory_format) -> None:
        for module in (self.unet, *self.controlnets, self.appearance, self.vae):
            if module is not None:
                module.to(memory_format=memory_format)

    def enable_cpu_tuning(self) -> None:
        """On the CPU, run float32 dense layers through oneDNN (`cpu_tuning.py`: faster where the CPU's BLAS is slow;
        results agree to float rounding, not bit for bit)."""
        self._cpu_tuning = True

    def disable_cpu_tuning(self) -> None:
        """On the CPU, run dense layers through torch's own matmul (its BLAS): the default."""
        self._cpu_tuning = False

    def enable_vae_slicing(self) -> None:
        self.vae.enable_slicing()

    def enable_vae_tiling(self) -> None:
        self.vae.enable_tiling()

    @property
    def _execution_device(self) -> torch.device:
        return self._offload_device or self.unet.device

    def _onload_side_branches(self) -> None:
        """Under CPU offload, move the ControlNets and appearance encoder to the accelerator now: the hint encoding
        calls a ControlNet's encoder layer, not its `forward`, where its hook sits."""
        for module in self._side_branches():
            hook = getattr(module, "_hf_hook", None)
            if hook is not None:
                hook.pre_forward(module)

    def _offload_side_branches(self) -> None:
        """Under CPU offload, move the ControlNets and appearance encoder back to the CPU before decoding."""
        for hook in getattr(self, "_side_branch_hooks", []):
            hook.offload()

    # ------------------------------------------------------------------ stages

    def encode_prompt(self, prompt: list[str], device: torch.device) -> torch.Tensor:
        """CLIP `last_hidden_state` (after the final LayerNorm) of prompts padded to the tokenizer's length."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        tokens = self.tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def encode_images(self, images: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Scaled VAE latents (the posterior mean) of `(N, 3, H, W)` images in [-1, 1], `chunk_size` at a time."""
        latents = []
        for chunk in images.split(chunk_size):
            # the execution device: under CPU offload the VAE is still on the CPU until its hook fires in `encode`
            chunk = chunk.to(self._execution_device, self.vae.dtype)
            latents.append(self.vae.encode(chunk).latent_dist.mode())
        return torch.cat(latents) * self.vae.config.scaling_factor

    def encode_video(self, video, chunk_size: int = 8) -> torch.Tensor:
        """Scaled latents `(4, T, h, w)` of a video checked by `check_video`, converting `chunk_size` frames at a
        time so that no float copy of the whole clip is made."""
        num_frames = video_size(video)[0]
        latents = [
            self.encode_images(_video_chunk_to_tensor(video, i, i + chunk_size), chunk_size).float().cpu()
            for i in range(0, num_frames, chunk_size)
        ]
        return torch.cat(latents).transpose(0, 1)

    def decode_latents(
        self, latents: torch.Tensor, chunk_size: int = 8, as_uint8: bool = False, progress: bool = False
    ) -> torch.Tensor:
        """`(B, 4, T, h, w)` latents -> `(B, T, 3, H, W)` frames in [0, 1], or uint8 `(B, T, H, W, 3)` on the CPU
        with `as_uint8`, converted chunk by chunk so that a long clip never exists as float pixels.

        fp16 decodes can overflow to NaN; such a chunk is decoded again in float32.
        """
        b, f = latents.shape[0], latents.shape[2]
        flat = rearrange(latents, "b c t h w -> (b t) c h w") / self.vae.config.scaling_factor
        frames = []
        bar = tqdm(total=flat.shape[0], disable=not progress or flat.shape[0] <= chunk_size, file=sys.stderr,
                   unit="frame", desc="VAE decoding")
        for chunk in flat.split(chunk_size):
            bar.update(chunk.shape[0])
            image = self.vae.decode(chunk.to(self.vae.dtype)).sample
            if not torch.isfinite(image).all() and self.vae.dtype != torch.float32:
                logger.warning("the %s VAE decode produced NaN or inf; decoding again in float32", self.vae.dtype)
                original = self.vae.dtype
                self.vae.to(torch.float32)
                image = self.vae.decode(chunk.float()).sample
                self.vae.to(original)
            image = FRAME_PROCESSOR.postprocess(image.float(), output_type="pt")  # [0, 1]
            frames.append(unit_to_uint8(image) if as_uint8 else image)
        bar.close()
        shape = (b, f, *frames[0].shape[1:]) if as_uint8 else (b, f, 3, *frames[0].shape[-2:])
        return torch.cat(frames).view(shape)

    def check_inputs(
        self, prompt, video, structure_maps, keyframes, keyframe_indices, structure_scale, strength, prior,
        prior_coefficient, guidance_scale, num_inference_steps, window_length=None, window_overlap=None,
        window_noise="independent", appearance_scale=1.0,
    ) -> tuple[int, ...]:
        """Check every argument of `__call__` once; return the keyframes' clip frames (negative indices resolved)."""
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            raise InvalidInputError(f"`prompt` must be a string or a list of strings, got {type(prompt).__name__}")
        f, h, w = video_size(video)
        m = self.size_multiple
        if h % m or w % m:
            raise InvalidInputError(
                f"frame size must be a multiple of {m}, got {w}x{h}: resize to {max(m, round(w / m) * m)}x{max(m, round(h / m) * m)}"
            )
        nets = self.controlnets
        if len(structure_maps) != len(nets):
            raise InvalidInputError(f"this model has {len(nets)} ControlNet(s), got {len(structure_maps)} structure map sets")
        for i, maps in enumerate(structure_maps):
            if tuple(maps.shape) != (f, 3, h, w):
                raise InvalidInputError(f"structure maps {i} must be (frames, 3, height, width) = {(f, 3, h, w)}, got {tuple(maps.shape)}")
            problem = None if is_held(maps) else maps_problem(maps, f, (h, w))
            if problem is not None:
                raise InvalidInputError(f"structure maps {i} must be uint8, or float in [0, 1]; got {problem}")
        if not isinstance(structure_scale, (int, float)) and len(structure_scale) != len(nets):
            raise InvalidInputError(f"got {len(structure_scale)} structure scales for {len(nets)} ControlNet(s)")
        if keyframes:
            if self.appearance is None:
                raise InvalidInputError("this model has no appearance branch, so it cannot use a keyframe; use a keyframe (TVI2V) model")
            for keyframe in keyframes:
                if tuple(keyframe.shape[-2:]) != (h, w):
                    raise InvalidInputError(f"`keyframe` must be {w}x{h} like the frames, got {keyframe.shape[-1]}x{keyframe.shape[-2]}")
            if keyframe_indices is None:
                if len(keyframes) > 1:
                    raise InvalidInputError(f"{len(keyframes)} keyframes need {len(keyframes)} `keyframe_index` values")
                keyframe_indices = [default_keyframe_index(f)]
            if len(keyframe_indices) != len(keyframes):
                raise InvalidInputError(f"got {len(keyframe_indices)} `keyframe_index` values for {len(keyframes)} keyframes")
        elif keyframe_indices:
            raise InvalidInputError("`keyframe_index` needs a `keyframe`")
        resolved = check_keyframe_indices(keyframe_indices or (), f)
        if not 0 < strength <= 1:
            raise InvalidInputError(f"`strength` must be in (0, 1], got {strength}")
        if prior not in PRIORS:
            raise InvalidInputError(f"`prior` must be one of {', '.join(PRIORS)}, got {prior!r}")
        if prior == "keyframe" and not keyframes:
            raise InvalidInputError("`prior='keyframe'` needs a keyframe")
        if prior == "keyframe" and not keyframes_act(len(keyframes), appearance_scale):
            raise InvalidInputError("`prior='keyframe'` needs a keyframe that acts: at `appearance_scale` 0 keyframes "
                                    "act like none; use another prior or a non-zero scale")
        if prior != "none" and strength < 1:
            raise InvalidInputError("the anchor prior and SDEdit `strength` < 1 exclude each other; use one of them")
        if prior_coefficient < 0:
            raise InvalidInputError(f"`prior_coefficient` must be >= 0, got {prior_coefficient}")
        if guidance_scale < 0:
            raise InvalidInputError(f"`guidance_scale` must be >= 0, got {guidance_scale}")
        if num_inference_steps < 1:
            raise InvalidInputError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}")
        check_window(window_length, window_overlap)
        if window_noise not in WINDOW_NOISE:
            raise InvalidInputError(f"`window_noise` must be one of {', '.join(WINDOW_NOISE)}, got {window_noise!r}")
        return resolved

    _callback_tensor_inputs = ["latents"]

    # long: the public signature and its argument docs; the body is six numbered stages over the named steps below
    @torch.no_grad()
    @_cpu_kernels
    def __call__(
        self,
        prompt: str | list[str],
        video: np.ndarray | torch.Tensor,
        structure_maps: torch.Tensor | Sequence[torch.Tensor] = (),
        *,
        negative_prompt: str | list[str] | None = None,
        keyframe: KeyframeImage | Sequence[KeyframeImage] | None = None,
        keyframe_index: int | Sequence[int] | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        structure_scale: float | Sequence[float] = 1.0,
        appearance_scale: float = 1.0,
        prior: str = "none",
        prior_coefficient: float = 0.0,
        strength: float = 1.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = 8,
        window_length: int | None = None,
        window_overlap: int | None = None,
        hierarchical: bool | None = None,
        pin_keyframes: bool = True,
        window_noise: str = "independent",
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | PipelineCallback
        | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = True,
        record_conditions: bool = False,
        mask: np.ndarray | torch.Tensor | None = None,
    ) -> CCEditPipelineOutput:
        r"""Edit `video`.

        Args:
            prompt (`str` or `list[str]`): the target description; a list edits the same video once per prompt.
            video: the source frames at the working size: uint8 `(frames, height, width, 3)` or float
                `(frames, 3, height, width)` in `[0, 1]`.
            structure_maps: per ControlNet, maps `(frames, 3, height, width)` in `[0, 1]` (see `ccedit.annotators`).
            negative_prompt: text for the unconditional half of classifier-free guidance (default: empty).
            keyframe: the edited keyframe at the working size, or a list of them; their look is spread over the video.
            keyframe_index (`int` or `list[int]`, *optional*): the frame each keyframe shows (negative counts from the
                end); for one keyframe the default is the centre frame.
            num_inference_steps (`int`): denoising steps (DPM++(2S) ancestral makes two model calls per step).
            guidance_scale (`float`): text guidance; `<= 1` runs one model pass per call instead of two.
            structure_scale: strength of each ControlNet; 0 skips it.
            appearance_scale (`float`): strength of the keyframe; 0 skips the appearance branch.
            prior (`str`): CCEdit's anchor prior: start from `prior_coefficient * z + noise`, with `z` the keyframe
                latent repeated over frames (`"keyframe"`; with several, each frame takes its nearest keyframe's) or
                the source frames' latents (`"video"`).
            prior_coefficient (`float`): the prior's weight (CCEdit uses 0.03 with a keyframe).
            strength (`float`): SDEdit; below 1, start from the source latents noised to that fraction of the schedule.
            generator (`torch.Generator`, *optional*): fixes the noise, so the same seed gives the same output.
            latents (`torch.Tensor`, *optional*): initial noise `(batch, 4, frames, h, w)` instead of drawing it.
            output_type (`str`): `"np"`, `"pt"`, `"pil"` or `"latent"`.
            decode_chunk_size (`int`): frames per VAE call.
            window_length (`int`, *optional*): frames per network call; a longer clip is denoised in overlapping
                windows fused at every step (`ccedit.pipelines.windows`). Default: the whole clip at once.
            window_overlap (`int`, *optional*): frames neighbouring windows share at least; default a quarter.
            hierarchical (`bool`, *optional*): with keyframes on a clip longer than a window, first edit frames
                spread over the whole clip, anchored on the keyframes, then dense windows centred on those frames.
                Default: on exactly in that case.
            window_noise (`str`): `"independent"` noise for every frame, or `"repeat"` the first window's noise,
                shuffled, in each later block of frames (FreeNoise), so that windows start from correlated noise.
            pin_keyframes (`bool`): keep each keyframe's latent at its frame, so the output shows the keyframe there
                (up to the VAE's round trip); `False` lets the model repaint it, as CCEdit did.
            callback_on_step_end: diffusers' step-end callback, called as `callback(pipe, step_index, timestep,
                callback_kwargs)` after every scheduler step (of each pass, for a hierarchical edit, whose latents
                are those of the pass's frames); `callback_kwargs` holds the tensors named in
                `callback_on_step_end_tensor_inputs`, and a `"latents"` entry in the dict it returns replaces them.
                diffusers' `PipelineCallback` and `MultiPipelineCallbacks` work as they do in its pipelines.
            callback_on_step_end_tensor_inputs (`Sequence[str]`): the tensors the callback receives; only
                `"latents"` exists here.
            progress (`bool`): show a progress bar over the network calls (windows x evaluations).
            record_conditions (`bool`): record what each network received, window by window (the structure maps,
                the keyframes and where they act, the SDEdit source frames), as `output.conditions`; it holds a
                copy of every window's maps.
            mask (*optional*): a region edit: float `(frames, height, width)` in [0, 1] (1: edited, 0: the source
                kept, between: blended). Outside it the source's latents are kept at every step and the output
                frames are the source's exactly (`ccedit.pipelines.region`); all ones equals no mask.

        Returns:
            [`CCEditPipelineOutput`]: the frames, per-stage timings and peak accelerator memory.
        """
        start = time.perf_counter()
        timings: dict[str, float] = {}
        device = self._execution_device
        clock = functools.partial(finished_time, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        # 1. Check inputs.
        if output_type not in ("np", "pt", "pil", "latent"):
            raise InvalidInputError(f"`output_type` must be np, pt, pil or latent, got {output_type!r}")
        video = check_video(video)
        structure_maps = [structure_maps] if isinstance(structure_maps, torch.Tensor) else list(structure_maps)
        keyframes = [] if keyframe is None else keyframe if isinstance(keyframe, (list, tuple)) else [keyframe]
        keyframes = [_image_to_tensor(k) for k in keyframes]
        indices = [keyframe_index] if isinstance(keyframe_index, int) else keyframe_index
        keyframe_frames = self.check_inputs(
            prompt, video, structure_maps, keyframes, indices, structure_scale, strength, prior,
            prior_coefficient, guidance_scale, num_inference_steps, window_length, window_overlap, window_noise,
            appearance_scale,
        )
        soft = None if mask is None else check_mask(mask, video_size(video)[0], video_size(video)[1:])
        step_end = step_end_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch, num_frames = len(prompts), video_size(video)[0]
        scales = [structure_scale] * len(structure_maps) if isinstance(structure_scale, (int, float)) else structure_scale

        # 2. Encode the prompts (uncond first, as CCEdit batches them).
        t0 = clock()
        text = self._encode_guided_prompts(prompts, negative_prompt, guidance_scale > 1, device)
        timings["encode_prompt"] = clock() - t0

        # 3. Encode the keyframes and, when needed, the source frames.
        t0 = clock()
        encoded = None
        if keyframes:
            encoded = Keyframes(keyframe_frames, self.encode_images(torch.cat(keyframes)).float())
        region_mask = None if soft is None else latent_mask(soft, self.vae_scale_factor)
        conditions = TridentConditions(text, structure_maps, tuple(scales), encoded, appearance_scale, region_mask)
        record = None
        if record_conditions:
            record = ConditionsRecord(tuple(float(s) for s in scales), float(appearance_scale),
                                      conditions.uses_appearance, prior, float(prior_coefficient), float(strength))
        source_latents = None
        if prior == "video" or strength < 1 or soft is not None:
            source_latents = self.encode_video(video, decode_chunk_size)[None].expand(batch, -1, -1, -1, -1).to(device)
        timings["encode_keyframe"] = clock() - t0

        # 4. Timesteps and initial latents.
        set_sampling_timesteps(self.scheduler, num_inference_steps, device, self.config.sampling_convention)
        noise = self._initial_noise(latents, generator, (batch, num_frames, *video_size(video)[1:]), device,
                                    window_noise, window_length)
        latents, timesteps = self._initial_latents(noise, strength, prior, prior_coefficient, encoded,
                                                   source_latents, device)
        if record is not None and strength < 1:
            record.sdedit_first_timestep = float(timesteps[0]) if len(timesteps) else None
            record.sdedit_frames = video_as_uint8(video)

        # 5. Denoise, window by window (`_denoise_passes`).
        t0 = clock()
        latents, passes = self._denoise_passes(
            latents, timesteps, conditions, keyframe_frames, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, strength=strength, generator=generator, window_length=window_length,
            window_overlap=window_overlap, hierarchical=hierarchical, pin_keyframes=pin_keyframes,
            step_end=step_end, record=record, progress=progress,
            region=None if soft is None else SourceRegion(region_mask, source_latents.float(), noise),
        )
        timings["denoise"] = clock() - t0

        # 6. Decode.
        t0 = clock()
        self._offload_side_branches()
        frames = self._output_frames(latents, output_type, decode_chunk_size, progress,
                                     None if soft is None else (video_as_uint8(video), soft))
        if record is not None:
            record.decode_keyframes(lambda z: self.decode_latents(z.to(device), as_uint8=True))
        timings["decode"] = clock() - t0
        timings["total"] = clock() - start
        peak = peak_memory_bytes(device)
        self.maybe_free_model_hooks()
        return CCEditPipelineOutput(frames=frames, timings=timings, peak_memory_bytes=peak,
                                    windows=[len(windows) for _, windows in passes], conditions=record)

    # ------------------------------------------------------------------ the steps of `__call__`

    def _encode_guided_prompts(self, prompts: list[str], negative_prompt: str | list[str] | None, do_cfg: bool,
                               device: torch.device) -> torch.Tensor:
        """The prompts' embeddings, with classifier-free guidance the negative prompts' first (uncond first)."""
        text = self.encode_prompt(prompts, device)
        if not do_cfg:
            return text
        negative = negative_prompt if negative_prompt is not None else ""
        negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        if len(negatives) != len(prompts):
            raise InvalidInputError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        return torch.cat([self.encode_prompt(negatives, device), text])

    def _initial_noise(self, latents: torch.Tensor | None, generator: torch.Generator | None,
                       size: tuple[int, int, int, int], device: torch.device, window_noise: str,
                       window_length: int | None) -> torch.Tensor:
        """The starting noise `(batch, 4, frames, h, w)` for a clip of `size` (batch, frames, height, width): the
        given latents, or drawn from `generator`; FreeNoise repeats the first window's in later ones."""
        batch, num_frames, height, width = size
        shape = (batch, self.unet.config.in_channels, num_frames, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is not None:
            noise = latents.to(device, torch.float32)
        else:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if window_noise == "repeat" and window_length is not None and window_length < num_frames:
            noise = repeat_window_noise(noise, window_length)
        return noise

    def _initial_latents(self, noise: torch.Tensor, strength: float, prior: str, prior_coefficient: float,
                         encoded: Keyframes | None, source_latents: torch.Tensor | None,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latents denoising starts from and, for SDEdit, the timesteps it runs (None: the scheduler's all).

        SDEdit (`strength` < 1) noises the source latents to where its timesteps start; otherwise the noise is
        scaled as the sampling convention does, mixed with the anchor prior's `z` when there is one.
        """
        convention = self.config.sampling_convention
        if strength < 1:
            return sdedit_start(source_latents.float(), noise, self.scheduler, strength=strength,
                                convention=convention)
        anchor = None
        if prior == "keyframe":
            batch, num_frames = noise.shape[0], noise.shape[2]
            anchor = keyframe_prior(encoded, num_frames).to(device)[None].expand(batch, -1, -1, -1, -1)
        elif prior == "video":
            anchor = source_latents.float()
        latents = prepare_initial_latents(noise, self.scheduler, prior=anchor, prior_coefficient=prior_coefficient,
                                          convention=convention)
        return latents, None

    def _denoise_passes(
        self, latents: torch.Tensor, timesteps: torch.Tensor | None, conditions: TridentConditions,
        keyframe_frames: tuple[int, ...], *, num_inference_steps: int, guidance_scale: float, strength: float,
        generator: torch.Generator | None, window_length: int | None, window_overlap: int | None,
        hierarchical: bool | None, pin_keyframes: bool, step_end, record: ConditionsRecord | None, progress: bool,
        region: SourceRegion | None = None,
    ) -> tuple[torch.Tensor, list]:
        """Denoise `latents` window by window; return them and the passes (frames, windows) that ran.

        Keyframes that act sit at the centre of a window of their own (where the model's appearance branch needs
        them there), and their latents are kept (pinned). A clip longer than a window with keyframes is edited
        hierarchically: first a sparse pass over frames spread across the clip, then dense windows anchored on
        those edited frames. A `region` keeps the source outside its mask in every pass.
        """
        device, dtype, convention = self._execution_device, self.unet.dtype, self.config.sampling_convention
        num_frames = latents.shape[2]
        self._onload_side_branches()
        trident = self.trident()
        acting = keyframe_frames if conditions.uses_appearance else ()
        known = None
        if pin_keyframes and acting:
            known = KnownLatents(keyframe_frames, conditions.keyframes.latents.transpose(0, 1)[None].to(device))
        passes = plan_passes(num_frames, window_length, window_overlap, acting, hierarchical,
                             centre_keyframes=trident.centres_keyframes)
        bar = self._denoising_bar(timesteps, num_inference_steps, sum(len(windows) for _, windows in passes),
                                  progress)
        for pass_index, (frames, windows) in enumerate(passes):
            sub_conditions = conditions.for_frames(frames) if len(frames) < num_frames else conditions
            sub_known = known
            sub_region = region.for_frames(frames) if region is not None and len(frames) < num_frames else region
            if known is not None and len(frames) < num_frames:
                sub_known = KnownLatents(tuple(frames.index(k) for k in known.frames), known.latents)
            if pass_index > 0:  # the scheduler counts its steps: restart it for the next pass
                set_sampling_timesteps(self.scheduler, num_inference_steps, device, convention)
                timesteps = sdedit_timesteps(self.scheduler, strength, convention) if strength < 1 else None
            model_fn = ClipDenoiser(trident, sub_conditions, len(frames), windows, fusion_weights(windows, len(frames)),
                                    device=device, dtype=dtype,
                                    timesteps=self.scheduler.timesteps if timesteps is None else timesteps)
            model_fn.on_window = bar.update
            if record is not None:
                record.start_pass(frames, sub_conditions.keyframes, conditions.uses_appearance)
                model_fn.recorder = record
            edited = denoise(
                model_fn, self.scheduler, latents[:, :, frames], guidance_scale=guidance_scale, generator=generator,
                callback=step_end, progress=False, timesteps=timesteps, known=sub_known, region=sub_region,
            )
            if len(frames) < num_frames:
                # The sparse pass's frames become the keyframes of the dense one, acting in the dense windows
                # (centred on each, where the branch needs it), and all of them are kept.
                conditions = replace(conditions, keyframes=Keyframes(tuple(frames), edited.transpose(1, 2)))
                known = KnownLatents(tuple(frames), edited)
            else:
                latents = edited
        bar.close()
        return latents, passes

    def _denoising_bar(self, timesteps: torch.Tensor | None, num_inference_steps: int, total_windows: int,
                       progress: bool) -> tqdm:
        """The progress bar over network calls: evaluations (of the SDEdit tail, or every step) x windows."""
        evaluations = len(self.scheduler.timesteps if timesteps is None else timesteps)
        per_step = -(-len(self.scheduler.timesteps) // num_inference_steps)  # evaluations per step (DPM++(2S): 2)
        steps_run = -(-evaluations // per_step)  # fewer than num_inference_steps with SDEdit
        return tqdm(total=evaluations * total_windows, disable=not progress, file=sys.stderr, unit="window",
                    desc=f"denoising: {steps_run} steps, {evaluations} network evaluations x {total_windows} windows")

    def _output_frames(self, latents: torch.Tensor, output_type: str, decode_chunk_size: int, progress: bool,
                       source: tuple[np.ndarray, torch.Tensor] | None = None):
        """The edited latents as `output_type` asks (see `CCEditPipelineOutput.frames`); with `source` (uint8 frames
        and a region's soft mask) the decoded frames are composited into the source frames."""
        if output_type == "latent":
            return latents
        frames = self.decode_latents(latents, decode_chunk_size, as_uint8=output_type != "pt", progress=progress)
        if source is not None:
            frames = composite(frames, *source)
        if output_type == "np":
            return frames.numpy()
        if output_type == "pil":
            return [[PIL.Image.fromarray(a) for a in video_frames] for video_frames in frames.numpy()]
        return frames
