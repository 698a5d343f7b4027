"""Depth maps for the structure ControlNet: normalised inverse depth over the whole clip, near = 1.

Three back ends: any transformers depth model (`DPTDepth`, e.g. DPT-Hybrid MiDaS as in CCEdit, or Depth Anything),
and the controlnet-aux MiDaS and ZoeDepth detectors (`MidasDepth`, `ZoeDepth`). All of them normalise with
statistics of the whole clip, never per frame, so that the maps do not flicker, as the original CCEdit release
did in its depth conditioners (`DepthMidasEncoder`, `DepthZoeEncoder` in `sgm/modules/encoders/modules.py`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ccedit.annotators.base import Annotator, fit_prediction, pad_to_multiple
from ccedit.annotators.detector import DetectorAnnotator
from ccedit.annotators.loading import (
    DEFAULT_ANNOTATOR_REPO,
    folder_fingerprint,
    hub_revision,
    is_hub_reachable,
    is_local_reference,
    missing_hub_model,
    missing_local_model,
    module_identity,
)
from ccedit.errors import LOAD_ADVICE, UserError, is_out_of_memory, out_of_memory, weights_load_error

logger = logging.getLogger(__name__)

DEFAULT_DPT_MODEL = "Intel/dpt-hybrid-midas"

# Weight files of the controlnet-aux detectors in `lllyasviel/Annotators`, by model type. Only the types that
# controlnet-aux can build without fetching a backbone through torch.hub are listed.
MIDAS_FILENAMES = {"dpt_hybrid": "dpt_hybrid-midas-501f0c75.pt", "dpt_large": "dpt_large-midas-2f21e586.pt"}
ZOE_FILENAMES = {"zoedepth": "ZoeD_M12_N.pt", "zoedepth_nk": "ZoeD_M12_NK.pt"}

PREPROCESS_MODES = ("ccedit", "processor")


def normalize_disparity(disparity: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Map relative inverse depth to `[0, 1]` by the min and max of the whole clip (near = 1).

    CCEdit's `DepthMidasEncoder` normalises by the global min and max over batch and frames.
    A constant input maps to 0.

    Args:
        disparity (`torch.Tensor` of shape `(frames, 1, height, width)`): Larger means nearer.
    """
    low, high = disparity.amin(), disparity.amax()
    return (disparity - low) / (high - low).clamp_min(eps)


def normalize_metric_depth(
    depth: torch.Tensor, low_percentile: float = 2.0, high_percentile: float = 85.0, eps: float = 1e-8
) -> torch.Tensor:
    """Map metric depth to `[0, 1]` with near = 1, by two percentiles of the whole clip, as CCEdit did for ZoeDepth.

    CCEdit's `DepthZoeEncoder` scales depth by its 2nd and 85th percentiles over all frames, clamps, and the
    ControlNet then sees `1 - depth`. Percentiles use numpy's linear interpolation, like the original.

    Args:
        depth (`torch.Tensor` of shape `(frames, 1, height, width)`): Larger means farther.
        low_percentile (`float`, defaults to 2.0): Depth at this percentile maps to 1 (near).
        high_percentile (`float`, defaults to 85.0): Depth at and beyond this percentile maps to 0 (far).
    """
    low, high = np.percentile(depth.double().numpy(), [low_percentile, high_percentile])
    scaled = (depth - float(low)) / max(float(high - low), eps)
    return 1.0 - scaled.clamp(0.0, 1.0)


class DPTDepth(Annotator):
    """Depth from any transformers depth model (`AutoModelForDepthEstimation`): DPT, DPT-Hybrid, Depth Anything.

    Two preprocessing modes:
    - `"ccedit"`, CCEdit's MiDaS convention (`DepthMidasEncoder`): pixels mapped to `[-1, 1]` (mean 0.5, std 0.5)
      and fed at the working resolution, without the usual resize to 384. The frames are padded by reflection up to
      a multiple of `size_multiple` and the prediction is cropped back. Meant for the MiDaS DPT models; Depth
      Anything expects ImageNet statistics and should use `"processor"`.
    - `"processor"`: the model's own image processor (resize and normalisation); the prediction is resized
      bilinearly to the frame size.

    Relative models predict inverse depth, which is normalised over the clip (`normalize_disparity`). Metric models
    predict depth, which is inverted (`1 / depth`) first.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`, defaults to `"Intel/dpt-hybrid-midas"`):
            A local folder or a hub id for `from_pretrained`, or a loaded model whose output has `predicted_depth`
            `(b, h, w)`. A loaded model has no stable identity for `cache_key`: pass a path or id when caching.
        preprocess (`str`, defaults to `"ccedit"`): `"ccedit"` or `"processor"`, see above.
        size_multiple (`int`, *optional*):
            Padding multiple in `"ccedit"` mode; by default 32 for DPT (as MiDaS) and the patch size otherwise.
        is_metric (`bool`, *optional*):
            Whether the model predicts metric depth rather than inverse depth; by default read from its config.
        batch_size (`int`, defaults to 4): Frames per forward pass.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "depth_dpt"

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_DPT_MODEL,
        preprocess: str = "ccedit",
        size_multiple: int | None = None,
        is_metric: bool | None = None,
        batch_size: int = 4,
        show_progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        if preprocess not in PREPROCESS_MODES:
            raise UserError(f"`preprocess` must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
        self.preprocess = preprocess
        self.processor = None
        if isinstance(model, torch.nn.Module):
            if preprocess == "processor":
                raise UserError("`preprocess='processor'` needs the model's folder or hub id, not a loaded model")
            self.model = model.eval()
            self.model_id = module_identity(model)
            self._weights: Any = None
        else:
            self.model_id = os.fspath(model)
            self.model, self.processor = _load_transformers_depth(
                self.model_id, with_processor=preprocess == "processor"
            )
            self._weights = (
                folder_fingerprint(self.model_id) if is_local_reference(self.model_id) else hub_revision(self.model_id)
            )
        config = getattr(self.model, "config", None)
        self.size_multiple = size_multiple or _default_size_multiple(config)
        self.is_metric = is_metric if is_metric is not None else _is_metric_config(config)

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        size = frames.shape[1:3]
        if self.preprocess == "processor":
            inputs = self.processor(images=list(frames), return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        else:
            pixel_values = pad_to_multiple(self._frames_to_tensor(frames) * 2.0 - 1.0, self.size_multiple)

        with _dpt_any_input_size(self.model, *pixel_values.shape[-2:]):
            prediction = self.model(pixel_values=pixel_values).predicted_depth  # (b, h, w)
        prediction = prediction.unsqueeze(1).float()  # (b, 1, h, w)

        if self.preprocess == "processor":
            # The processor resized the frame as a whole, so the prediction is resized as a whole.
            return fit_prediction(prediction, size, size)
        return fit_prediction(prediction, pixel_values.shape[-2:], size)

    def _postprocess_clip(self, maps: torch.Tensor) -> torch.Tensor:
        if self.is_metric:
            # A metric model's depth is inverted, so that the map is inverse depth like a relative model's.
            maps = 1.0 / maps.clamp_min(1e-6)
        return normalize_disparity(maps)

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model.to(device=device, dtype=dtype)

    def _settings(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "weights": self._weights,
            "preprocess": self.preprocess,
            "size_multiple": self.size_multiple if self.preprocess == "ccedit" else None,
            "is_metric": self.is_metric,
            "dtype": str(self.dtype),
        }


class _DetectorDepth(DetectorAnnotator):
    """A controlnet-aux depth detector with one weight file per `model_type`, as MiDaS and ZoeDepth are.

    Subclasses name the files (`weight_files`) and the detector (`detector_class`), call `__init__` first and
    `_load` last in their own `__init__`, and say how a batch is predicted and the clip normalised.
    """

    weight_files: ClassVar[dict[str, str]]  # weight file by model type
    weights_description: ClassVar[str]  # for errors and the log
    # "module.Class" of the controlnet-aux detector, imported only when weights are loaded: controlnet-aux is heavy
    # to import and not needed for a network passed in ready-made.
    detector_class: ClassVar[str]
    variant_settings = ("model_type", "filename")

    def __init__(self, model_type: str, batch_size: int, show_progress: bool | None):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self._check_choice("model_type", model_type, self.weight_files)
        self.model_type = model_type

    def _load(self, model: str | os.PathLike | torch.nn.Module, filename: str | None) -> None:
        """Set `filename` (None for a loaded network) and load the network."""
        is_loaded = isinstance(model, torch.nn.Module)
        self.filename = None if is_loaded else filename or self.weight_files[self.model_type]
        self._load_network(model, [self.filename], what=self.weights_description)

    def _build_network(self, paths: list[Path]) -> torch.nn.Module:
        (path,) = paths
        module_name, class_name = self.detector_class.rsplit(".", 1)
        detector_type = getattr(importlib.import_module(module_name), class_name)
        detector = detector_type.from_pretrained(str(path.parent), model_type=self.model_type, filename=path.name)
        return detector.model


class MidasDepth(_DetectorDepth):
    """MiDaS inverse depth through controlnet-aux's `MidasDetector`: the DPT-Hybrid network CCEdit shipped.

    CCEdit's convention (`DepthMidasEncoder`): frames in `[-1, 1]` at the working resolution (padded by reflection to a
    multiple of 32 and cropped back), normalised by the min and max of the whole clip, near = 1.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`, defaults to `"lllyasviel/Annotators"`):
            A folder holding the weight file, a hub repository id, or a loaded network mapping `(b, 3, H, W)`
            pixels in `[-1, 1]` to inverse depth `(b, H, W)`.
        model_type (`str`, defaults to `"dpt_hybrid"`): `"dpt_hybrid"` or `"dpt_large"`.
        filename (`str`, *optional*): The weight file; by default the controlnet-aux name for `model_type`.
        size_multiple (`int`, defaults to 32): Padding multiple of the input.
        batch_size (`int`, defaults to 4): Frames per forward pass.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "midas"
    is_input_signed = True
    weights_description = "MiDaS depth weights"
    detector_class = "controlnet_aux.midas.MidasDetector"
    weight_files = MIDAS_FILENAMES
    tuning_settings = ("size_multiple",)

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_ANNOTATOR_REPO,
        model_type: str = "dpt_hybrid",
        filename: str | None = None,
        size_multiple: int = 32,
        batch_size: int = 4,
        show_progress: bool | None = None,
    ):
        super().__init__(model_type, batch_size=batch_size, show_progress=show_progress)
        self.size_multiple = size_multiple
        self._load(model, filename)

    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        # MiDaSInference: (b, 3, H, W) in [-1, 1] -> (b, H, W) relative inverse depth.
        return self.network(pixels).unsqueeze(1)  # (b, 1, h, w)

    def _postprocess_clip(self, maps: torch.Tensor) -> torch.Tensor:
        return normalize_disparity(maps)


class ZoeDepth(_DetectorDepth):
    """ZoeDepth metric depth through controlnet-aux's `ZoeDetector`, mapped to near = 1 as CCEdit did.

    Frames go in `[0, 1]` at the working resolution (the network resizes internally). The depth of the whole clip
    is scaled by its `low_percentile` and `high_percentile`, clamped and inverted (`normalize_metric_depth`).

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`, defaults to `"lllyasviel/Annotators"`):
            A folder holding the weight file, a hub repository id, or a loaded network with
            `infer((b, 3, H, W) in [0, 1]) -> (b, 1, h, w)` metric depth.
        model_type (`str`, defaults to `"zoedepth"`): `"zoedepth"` (indoor + outdoor, M12_N) or `"zoedepth_nk"`.
        filename (`str`, *optional*): The weight file; by default the controlnet-aux name for `model_type`.
        low_percentile (`float`, defaults to 2.0): Depth percentile mapped to 1 (near).
        high_percentile (`float`, defaults to 85.0): Depth percentile mapped to 0 (far).
        batch_size (`int`, defaults to 2): Frames per forward pass.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "zoe"
    weights_description = "ZoeDepth weights"
    detector_class = "controlnet_aux.zoe.ZoeDetector"
    weight_files = ZOE_FILENAMES
    tuning_settings = ("low_percentile", "high_percentile")

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_ANNOTATOR_REPO,
        model_type: str = "zoedepth",
        filename: str | None = None,
        low_percentile: float = 2.0,
        high_percentile: float = 85.0,
        batch_size: int = 2,
        show_progress: bool | None = None,
    ):
        super().__init__(model_type, batch_size=batch_size, show_progress=show_progress)
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise UserError(
                f"zoe percentiles must satisfy 0 <= low_percentile < high_percentile <= 100, got {low_percentile} "
                f"and {high_percentile}"
            )
        self.low_percentile = low_percentile
        self.high_percentile = high_percentile
        self._load(model, filename)

    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.infer(pixels)  # (b, 1, h, w) metric depth

    def _postprocess_clip(self, maps: torch.Tensor) -> torch.Tensor:
        return normalize_metric_depth(maps, self.low_percentile, self.high_percentile)


def _default_size_multiple(config: Any) -> int:
    """32 for DPT (MiDaS's `ensure_multiple_of`), else the backbone's patch size (14 for Depth Anything)."""
    if config is None or getattr(config, "model_type", None) == "dpt":
        return 32
    backbone_config = getattr(config, "backbone_config", None)
    return int(getattr(backbone_config, "patch_size", None) or getattr(config, "patch_size", None) or 32)


def _is_metric_config(config: Any) -> bool:
    """Whether a transformers depth config describes a metric model (ZoeDepth, metric Depth Anything)."""
    if config is None:
        return False
    is_zoe = getattr(config, "model_type", None) == "zoedepth"
    return is_zoe or getattr(config, "depth_estimation_type", None) == "metric"


def _load_transformers_depth(model_id: str, with_processor: bool) -> tuple[torch.nn.Module, Any]:
    """Load a depth model (and its image processor) from a local folder or the hub, with one-line errors."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    is_local = is_local_reference(model_id)
    source = os.path.expanduser(model_id) if is_local else model_id
    hint = (
        f"pass a folder with config.json and the weights{' and preprocessor_config.json' if with_processor else ''}, "
        f"e.g. from `hf download {DEFAULT_DPT_MODEL} --local-dir {model_id}`"
    )
    if is_local and not os.path.isfile(os.path.join(source, "config.json")):
        # Checked here because transformers reports a folder without config.json as an unrecognised model type.
        raise missing_local_model("depth model", model_id, "config.json", hint)
    local_files_only = is_local or not is_hub_reachable()
    if not is_local and local_files_only:
        # From the cache's snapshot folder: transformers still asks the hub for some optional files (an adapter
        # config) under local_files_only, and waits out huggingface_hub's retries when it does not answer.
        from huggingface_hub import snapshot_download

        try:
            source = snapshot_download(model_id, local_files_only=True)
        except Exception as error:  # not in the cache (or a malformed id): nothing to load offline
            raise missing_hub_model("depth model", model_id, reason=error) from error
    logger.info("loading depth model %s", model_id)
    # Never run code shipped in a model folder or hub repository.
    options = {"local_files_only": local_files_only, "trust_remote_code": False}
    try:
        model = AutoModelForDepthEstimation.from_pretrained(source, **options)
        processor = AutoImageProcessor.from_pretrained(source, **options) if with_processor else None
    except OSError as error:
        if is_out_of_memory(error):
            raise out_of_memory(f"loading the depth model '{model_id}'", LOAD_ADVICE, error) from None
        if is_local:
            raise missing_local_model(
                "depth model", model_id, "loadable config.json and weights (or image processor)", hint
            ) from error
        raise missing_hub_model("depth model", model_id, reason=error) from error
    except ValueError as error:
        # transformers raises ValueError for a config that is not a depth estimation architecture.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"'{model_id}' is not a transformers depth estimation model: {reason}") from error
    except Exception as error:
        failure = weights_load_error(f"depth model '{model_id}'", source if is_local else ".", error)
        if failure is None:
            raise
        raise failure from None
    return model.eval(), processor


@contextlib.contextmanager
def _dpt_any_input_size(model: torch.nn.Module, height: int, width: int) -> Iterator[None]:
    """Let transformers' DPT and DPT-Hybrid run on non-square inputs of any multiple of the patch size.

    Their ViT embeddings already interpolate the position embeddings to any grid, but (transformers 5.x) the neck
    assumes a square patch grid when no `backbone_config` is set, and the hybrid embeddings refuse any size other
    than `config.image_size`. CCEdit ran MiDaS at the full 512x768 working size, so for the duration of one forward
    this passes the real patch grid to the neck and tells the hybrid embeddings the input size. Other models
    (Depth Anything, DPT with a separate backbone) handle any size themselves and are left alone.
    """
    if not type(model).__module__.startswith("transformers."):
        yield
        return
    from transformers import DPTForDepthEstimation

    if not isinstance(model, DPTForDepthEstimation) or model.backbone is not None:
        yield
        return

    patch_size = model.config.patch_size
    grid = {"patch_height": height // patch_size, "patch_width": width // patch_size}

    def pass_patch_grid(module, args, kwargs):
        # DPTNeck.forward(hidden_states, patch_height=None, patch_width=None), called positionally with None.
        given = dict(zip(grid, args[1:], strict=False)) | {k: kwargs[k] for k in grid if k in kwargs}
        if given.get("patch_height") is not None:
            return None
        rest = {k: v for k, v in kwargs.items() if k not in grid}
        return (args[0],), rest | grid

    handle = model.neck.register_forward_pre_hook(pass_patch_grid, with_kwargs=True)
    embeddings = model.dpt.embeddings
    saved_image_size = getattr(embeddings, "image_size", None)
    if model.config.is_hybrid:
        embeddings.image_size = (height, width)
    try:
        yield
    finally:
        handle.remove()
        if model.config.is_hybrid:
            embeddings.image_size = saved_image_size
