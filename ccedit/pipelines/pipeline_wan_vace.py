"""`WanVACEEditPipeline`: Wan2.1-VACE edits a clip of any length in fused windows, with keyframes anywhere.

diffusers' `WanVACEPipeline` generates one window (81 frames at most, as Wan was trained) from a control video,
a mask and reference images. This pipeline keeps its components, its prompt encoding and its mask folding (it is a
subclass, so released folders load as they are) and runs ccedit's edit on them: the structure maps are the control
video, each keyframe is kept at its frame (mask 0), the source is kept outside a region, and the clip is denoised in
windows of the native length in latent time, fused at every step by the planner ccedit uses for every model, with
the sampler shared by every model kind (`denoise`). Its call takes the arguments `CCEditPipeline` takes.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import WanVACEPipeline
from diffusers.utils.torch_utils import randn_tensor

from ..annotators.maps import hold, is_held
from ..errors import InvalidInputError
from ..schedulers import set_sampling_timesteps
from .conditions import check_keyframe_indices, default_keyframe_index, keyframes_act
from .cpu_tuning import onednn_linear
from .denoise import denoise, prepare_initial_latents, sdedit_start
from .pipeline_calls import (
    FRAME_PROCESSOR, check_video, finished_time, peak_memory_bytes, step_end_callback, unit_to_uint8, video_as_uint8,
)
from .pipeline_ccedit import CCEditPipelineOutput
from .region import SourceRegion, check_mask, composite
from .recording import ConditionsRecord
from .time_grid import TimeGrid, vace_passes
from .vace_context import ContextVideo, control_latents, encode_video, repeat_last
from .vace_denoiser import VACEClipDenoiser
from .vace_recording import record_vace_windows, start_vace_pass
from .wan_vae import decode_latents
from .windows import WINDOW_NOISE, check_window, repeat_window_noise

logger = logging.getLogger(__name__)

# The prompt length Wan was trained with (diffusers' `WanVACEPipeline` default).
MAX_SEQUENCE_LENGTH = 512


@dataclass(frozen=True)
class VACEPass:
    """What one denoising pass edits: its frames (uint8 `(n, H, W, 3)`), their control maps (uint8, or None), the
    keyframes kept at pass positions, and a region's soft mask `(n, H, W)` (or None)."""

    frames: np.ndarray
    control: np.ndarray | None
    keyframes: dict[int, np.ndarray]
    soft: torch.Tensor | None


@dataclass(frozen=True)
class PassSettings:
    """The call's sampling settings, the same for every pass."""

    references: list[np.ndarray]
    strength: float
    steps: int
    guidance_scale: float
    structure_scale: float | Sequence[float]
    generator: torch.Generator | None
    window_length: int | None
    window_overlap: int | None
    window_noise: str
    step_end: Callable | None
    progress: bool
    record: ConditionsRecord | None = None  # `record_conditions`: what each window was conditioned on


def _held_frames(maps: torch.Tensor) -> np.ndarray:
    """One annotator's maps as uint8 frames `(T, H, W, 3)`, the context video's form: held maps as they are, unit
    maps held chunk by chunk (no float copy of a long clip)."""
    if is_held(maps):
        return maps.permute(0, 2, 3, 1).cpu().numpy()
    return np.concatenate([hold(chunk.float().cpu()).permute(0, 2, 3, 1).numpy() for chunk in maps.split(64)])


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + seconds


class WanVACEEditPipeline(WanVACEPipeline):
    r"""Edit a video with Wan2.1-VACE: the prompt, the structure maps as VACE's control video, keyframes kept at
    their frames, optional reference images; any length, in windows fused at every step.

    Components as diffusers' `WanVACEPipeline` (`vae`, `text_encoder`, `tokenizer`, `transformer`, `scheduler`).
    """

    _callback_tensor_inputs = ["latents"]

    def __init__(self, tokenizer, text_encoder, vae, scheduler, transformer=None, transformer_2=None,
                 boundary_ratio=None):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                         transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio)
        self._cpu_tuning = False
        self._compiled = False

    # What every ccedit pipeline offers the edit workflow.

    @property
    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.vae_scale_factor_temporal)

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    @property
    def main_dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def enable_cpu_tuning(self) -> None:
        self._cpu_tuning = True

    def enable_channels_last(self) -> None:
        logger.warning("model.channels_last does nothing for a video transformer (its layers are linear)")

    def compile_networks(self, **kwargs) -> None:
        self.transformer.compile(**kwargs)
        self._compiled = True

    def enable_vae_slicing(self) -> None:
        """The VAE decodes one latent frame at a time already (`wan_vae.decode_latents`)."""

    def _kernels(self):
        eager_cpu = self._execution_device.type == "cpu" and not self._compiled
        return onednn_linear(self._cpu_tuning and eager_cpu)

    def edit_keyframe(self, prompt: str, frame: np.ndarray, structure_maps: Sequence[torch.Tensor], *,
                      negative_prompt: str | None = None, strength: float = 0.75, num_inference_steps: int = 30,
                      guidance_scale: float = 5.0, structure_scale: float | Sequence[float] = 1.0,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """One frame edited from `prompt`: a one-frame generation under the frame's control map, from the frame
        noised to `strength` (as an automatic keyframe is made). Returns uint8 `(H, W, 3)`."""
        maps = [m[None] for m in structure_maps]
        steps = max(num_inference_steps, math.ceil(1 / strength))  # at least one step is run
        out = self(prompt, frame[None], maps, negative_prompt=negative_prompt, strength=strength,
                   num_inference_steps=steps, guidance_scale=guidance_scale, structure_scale=structure_scale,
                   generator=generator, progress=False)
        return out.frames[0][0]

    # long: the public signature and its argument docs; the body is numbered stages over the named steps below
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        video: np.ndarray | torch.Tensor,
        structure_maps: torch.Tensor | Sequence[torch.Tensor] = (),
        *,
        negative_prompt: str | None = None,
        keyframe: np.ndarray | Sequence[np.ndarray] | None = None,
        keyframe_index: int | Sequence[int] | None = None,
        reference_images: Sequence[np.ndarray] = (),
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        structure_scale: float | Sequence[float] = 1.0,
        appearance_scale: float = 1.0,
        prior: str = "none",
        prior_coefficient: float = 0.0,
        strength: float = 1.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        window_length: int | None = None,
        window_overlap: int | None = None,
        hierarchical: bool | None = None,
        pin_keyframes: bool = True,
        window_noise: str = "independent",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = True,
        record_conditions: bool = False,
        mask: np.ndarray | torch.Tensor | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ) -> CCEditPipelineOutput:
        r"""Edit `video`.

        Args:
            prompt (`str`): the target description.
            video: the source frames at the working size (sides multiples of `size_multiple`): uint8 `(frames,
                height, width, 3)` or float `(frames, 3, height, width)` in `[0, 1]`; any count (fitted to 4k+1
                frames by repeating the last, and cut back).
            structure_maps: one annotator's maps `(frames, 3, height, width)`, uint8 or in `[0, 1]`: VACE's control
                video. None: no structure.
            keyframe, keyframe_index: edited frames (uint8 `(H, W, 3)`) kept at their frames (mask 0 there); for
                one keyframe the default frame is the centre.
            reference_images: VACE's reference images (uint8 `(H, W, 3)` at the working size), placed before the
                clip in latent time.
            structure_scale: VACE's context scale (a list: its first entry).
            appearance_scale: 0 leaves the keyframes out (as for every model kind).
            prior: only `"none"`: a flow-matching model starts from pure noise.
            strength: SDEdit from the source below 1.
            latents: the initial noise `(1, 16, references + latent frames, h, w)` instead of drawing it.
            output_type: `"np"` (uint8 `(1, frames, H, W, 3)`) or `"latent"`.
            window_length, window_overlap: in pixel frames; windows run in latent time (`time_grid`).
            hierarchical: with keyframes on a clip longer than a window, first edit frames spread over the clip
                (the keyframes among them), then the whole clip with those frames kept; default: in that case.
            pin_keyframes: not used: VACE keeps a keyframe through its mask, not by pinning a latent.
            mask: a region edit's soft mask `(frames, H, W)`: VACE keeps the source outside it, the sampler keeps
                its latents, and the frames are composited into the source.
            Others as `CCEditPipeline.__call__`.
        """
        start = time.perf_counter()
        device = self._execution_device
        clock = functools.partial(finished_time, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        frames_in = video_as_uint8(check_video(video))
        maps = [structure_maps] if isinstance(structure_maps, torch.Tensor) else list(structure_maps)
        keyframes, indices = self._check_inputs(frames_in, maps, keyframe, keyframe_index, prior, output_type,
                                                window_length, window_overlap, window_noise)
        soft = None if mask is None else check_mask(mask, len(frames_in), frames_in.shape[1:3])
        if not keyframes_act(len(keyframes), appearance_scale):
            keyframes, indices = [], []
        control = None if not maps else _held_frames(maps[0])
        fitted = self.time_grid.fitted(len(frames_in))
        if fitted != len(frames_in):
            logger.warning("the model takes 4k+1 frames: the %d frames are denoised as %d (the last repeated), "
                           "then cut back", len(frames_in), fitted)
        passes = vace_passes(len(frames_in), window_length, window_overlap, indices, hierarchical, self.time_grid)
        request = PassSettings(
            references=list(reference_images), strength=strength, steps=num_inference_steps,
            guidance_scale=guidance_scale, structure_scale=structure_scale, generator=generator,
            window_length=window_length, window_overlap=window_overlap, window_noise=window_noise,
            step_end=step_end_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs),
            progress=progress,
            record=self._conditions_record(record_conditions, structure_scale, keyframes, strength, frames_in),
        )
        timings: dict[str, float] = {}
        with self._kernels():
            t0 = clock()
            text = self._text(prompt, negative_prompt, guidance_scale, max_sequence_length, device)
            timings["encode_prompt"] = clock() - t0
            anchors = dict(zip(indices, keyframes))
            for number, (frames, windows) in enumerate(passes):
                # A sparse first pass edits frames spread over the clip around the keyframes; its frames are kept
                # as keyframes by the dense pass over the whole clip (`vace_passes`).
                last = number == len(passes) - 1
                clip = VACEPass(frames_in[frames], None if control is None else control[frames],
                                {frames.index(f): image for f, image in anchors.items() if f in frames},
                                None if soft is None else soft[frames])
                if request.record is not None:
                    start_vace_pass(request.record, frames, clip.keyframes)
                out = self._edit_pass(clip, text, request, windows, timings, clock, device,
                                      latents=latents if last else None, latent_output=last and output_type == "latent")
                if not last:
                    anchors = {f: out[0][i] for i, f in enumerate(frames)} | anchors
        timings["total"] = time.perf_counter() - start
        peak = peak_memory_bytes(device)
        self.maybe_free_model_hooks()
        return CCEditPipelineOutput(frames=out, timings=timings, peak_memory_bytes=peak,
                                    windows=[len(windows) for _, windows in passes], conditions=request.record)

    def _edit_pass(self, clip: VACEPass, text: torch.Tensor, request: PassSettings, windows, timings: dict, clock,
                   device: torch.device, *, latents: torch.Tensor | None, latent_output: bool):
        """One denoising pass over `clip`: its context, noise and windows, the sampler, and its frames decoded
        (uint8 `(1, frames, H, W, 3)`; the latents with `latent_output`). Stage times add up in `timings`."""
        grid, num_frames = self.time_grid, len(clip.frames)
        fitted = grid.fitted(num_frames)
        references = len(request.references)
        t0 = clock()
        keep = None if clip.soft is None else (clip.soft <= 0).cpu().numpy()
        context = ContextVideo.build(clip.control, clip.frames.shape[:3], keyframes=list(clip.keyframes.values()),
                                     keyframe_frames=list(clip.keyframes), keep=keep, source=clip.frames,
                                     fitted=fitted)
        conditioning = control_latents(self, context, request.references, device)
        if request.record is not None:
            record_vace_windows(request.record, context.video, context.generate, windows, grid, num_frames,
                                list(clip.keyframes))
        source = None
        if request.strength < 1 or clip.soft is not None:
            source = self._encode_source(clip.frames, fitted, references, device)
        _add(timings, "encode_keyframe", clock() - t0)
        set_sampling_timesteps(self.scheduler, request.steps, device, "diffusers")
        noise = self._noise(latents, conditioning.shape, request.generator, device, request.window_noise,
                            request.window_length)
        initial = prepare_initial_latents(noise, self.scheduler, convention="diffusers")
        timesteps = None
        if request.strength < 1:
            initial, timesteps = sdedit_start(source, noise, self.scheduler, strength=request.strength,
                                              convention="diffusers")
        scale = self._control_scale(request.structure_scale, device)
        denoiser = VACEClipDenoiser(self.transformer, text, conditioning, scale, references, windows)
        region = None
        if clip.soft is not None:
            region = SourceRegion(self._latent_region(clip.soft, fitted, references), source.float(), noise)
        t0 = clock()
        out = denoise(denoiser, self.scheduler, initial, guidance_scale=request.guidance_scale,
                      generator=request.generator, callback=request.step_end, progress=request.progress,
                      timesteps=timesteps, region=region)
        _add(timings, "denoise", clock() - t0)
        if latent_output:
            return out
        t0 = clock()
        frames = self._decode(out[:, :, references:], num_frames, clip.soft, clip.frames)
        _add(timings, "decode", clock() - t0)
        return frames

    # The named steps of `__call__`.

    @staticmethod
    def _conditions_record(wanted: bool, structure_scale, keyframes: list, strength: float,
                           frames: np.ndarray) -> ConditionsRecord | None:
        if not wanted:
            return None
        scale = structure_scale[0] if isinstance(structure_scale, Sequence) else structure_scale
        return ConditionsRecord((float(scale),), appearance_acts=bool(keyframes), strength=float(strength),
                                sdedit_frames=frames if strength < 1 else None)

    def _check_inputs(self, frames: np.ndarray, maps: list, keyframe, keyframe_index, prior: str, output_type: str,
                      window_length, window_overlap, window_noise) -> tuple[list[np.ndarray], list[int]]:
        num_frames, height, width = frames.shape[:3]
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise InvalidInputError(f"Wan-VACE edits frames whose sides are multiples of {multiple}, got {width}x{height}")
        if len(maps) > 1:
            raise InvalidInputError(f"Wan-VACE takes one control video: give one structure annotator, got {len(maps)}")
        for m in maps:
            if tuple(m.shape) != (num_frames, 3, height, width):
                raise InvalidInputError(f"structure maps must be ({num_frames}, 3, {height}, {width}), "
                                        f"got {tuple(m.shape)}")
        if prior != "none":
            raise InvalidInputError(f"prior {prior!r} is CCEdit's anchor prior; a flow-matching model starts from "
                                    "noise: set sampling.prior=none")
        if output_type not in ("np", "latent"):
            raise InvalidInputError(f"`output_type` must be np or latent, got {output_type!r}")
        check_window(window_length, window_overlap)
        if window_noise not in WINDOW_NOISE:
            raise InvalidInputError(f"`window_noise` must be one of {', '.join(WINDOW_NOISE)}, got {window_noise!r}")
        keyframes = [] if keyframe is None else list(keyframe) if isinstance(keyframe, (list, tuple)) else [keyframe]
        if keyframe_index is None:
            indices = [default_keyframe_index(num_frames)] * len(keyframes)
        else:
            indices = [keyframe_index] if isinstance(keyframe_index, int) else list(keyframe_index)
        if len(indices) != len(keyframes):
            raise InvalidInputError(f"{len(keyframes)} keyframes but {len(indices)} keyframe indices")
        indices = list(check_keyframe_indices(indices, num_frames))
        for image in keyframes:
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise InvalidInputError(f"a keyframe must be uint8 ({height}, {width}, 3) at the working size")
        return keyframes, indices

    def _text(self, prompt: str, negative_prompt: str | None, guidance_scale: float, max_sequence_length: int,
              device: torch.device) -> torch.Tensor:
        """The prompt embeddings, `[uncond; cond]` under guidance, as `denoise` batches the latents."""
        cond, uncond = self.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance=guidance_scale > 1,
                                          max_sequence_length=max_sequence_length, device=device)
        dtype = self.transformer.dtype
        return torch.cat([uncond, cond]).to(dtype) if guidance_scale > 1 else cond.to(dtype)

    def _encode_source(self, frames: np.ndarray, fitted: int, references: int, device: torch.device) -> torch.Tensor:
        """The source clip's latents (fitted), with zero reference slots in front: SDEdit's and a region's start."""
        latents = encode_video(self.vae, repeat_last(frames, fitted), device).float()
        slots = torch.zeros_like(latents[:, :, :1]).expand(-1, -1, references, -1, -1)
        return torch.cat([slots, latents], dim=2)

    def _noise(self, latents: torch.Tensor | None, shape: torch.Size, generator, device: torch.device,
               window_noise: str, window_length: int | None) -> torch.Tensor:
        shape = (1, self.transformer.config.in_channels, *shape[2:])
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InvalidInputError(f"`latents` must be {shape}, got {tuple(latents.shape)}")
            return latents.to(device, torch.float32)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if window_noise == "repeat" and window_length is not None:
            noise = repeat_window_noise(noise, self.time_grid.latents(self.time_grid.fitted(window_length)))
        return noise

    def _control_scale(self, structure_scale, device: torch.device) -> torch.Tensor:
        scale = structure_scale[0] if isinstance(structure_scale, Sequence) else structure_scale
        layers = len(self.transformer.config.vace_layers)
        return torch.full((layers,), float(scale), device=device, dtype=self.transformer.dtype)

    def _latent_region(self, soft: torch.Tensor, fitted: int, references: int) -> torch.Tensor:
        """A region's latent mask `(references + latent frames, h, w)`: a latent is edited when any pixel of any
        frame it holds is (the reference slots are free)."""
        grid, factor = self.time_grid, self.vae_scale_factor_spatial
        edited = soft > 0
        edited = torch.cat([edited, edited[-1:].expand(fitted - len(edited), -1, -1)])
        pooled = torch.nn.functional.max_pool2d(edited[:, None].float(), factor)[:, 0] > 0
        latent = torch.stack([pooled[list(grid.pixels_of(j))].any(0) for j in range(grid.latents(fitted))])
        return torch.cat([torch.ones_like(latent[:1]).expand(references, -1, -1), latent])

    def _decode(self, latents: torch.Tensor, num_frames: int, soft: torch.Tensor | None,
                source: np.ndarray) -> np.ndarray:
        """uint8 `(1, frames, H, W, 3)`, chunk by chunk on the host; composited into the source for a region."""
        chunks = []
        for chunk in decode_latents(self.vae, latents):
            unit = FRAME_PROCESSOR.postprocess(chunk[0].transpose(0, 1).float(), output_type="pt")
            chunks.append(unit_to_uint8(unit))
        frames = torch.cat(chunks)[:num_frames][None]
        if soft is not None:
            frames = composite(frames, source, soft)
        return frames.numpy()
