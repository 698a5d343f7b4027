"""The common part of the annotators that run one controlnet-aux network (MiDaS, ZoeDepth, lineart, HED, PiDiNet).

Each takes its network either ready-made or as weight files in a folder or hub repository, runs it on whole batches
of frames at the working resolution (padded by reflection and cropped back), and reports the same kind of cache key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ccedit.annotators.base import Annotator, fit_prediction, pad_to_multiple
from ccedit.annotators.loading import (
    DEFAULT_ANNOTATOR_REPO,
    files_fingerprint,
    module_identity,
    resolve_files,
    weights_only_loading,
)
from ccedit.errors import UserError

logger = logging.getLogger(__name__)


class DetectorAnnotator(Annotator):
    """Base class of the annotators around one controlnet-aux network, held in `network`.

    A subclass calls `_load_network` at the end of its `__init__` and implements `_build_network`; by default a
    batch is fed to `network` as `(b, 3, H, W)` pixels, padded to `size_multiple`, and the prediction is brought back
    to the frame size. Its settings for `cache_key` and `repr` are the attributes named in `variant_settings` and
    `tuning_settings`, around the model and its weight files.
    """

    # Whether the network takes pixels in [-1, 1] rather than [0, 1].
    is_input_signed: ClassVar[bool] = False
    # 1 leaves the frames unpadded, for networks that resize their input themselves.
    size_multiple: int = 1
    # Attributes that pick the network or the kind of map (listed before the weights), and those that only tune it.
    variant_settings: ClassVar[tuple[str, ...]] = ()
    tuning_settings: ClassVar[tuple[str, ...]] = ()

    network: torch.nn.Module
    model_id: str
    # `files_fingerprint` of the weight files; None for a network passed in ready-made.
    _weights: list[list[Any]] | None

    def _check_choice(self, argument: str, value: str, choices: Collection[str]) -> None:
        """Raise a one-line `UserError` unless `value` is one of `choices`."""
        if value not in choices:
            raise UserError(f"`{argument}` for {self.name} must be one of {', '.join(choices)}, got {value!r}")

    def _load_network(
        self,
        model: str | os.PathLike | torch.nn.Module,
        filenames: list[str],
        *,
        what: str,
        used_files: list[str] | None = None,
    ) -> None:
        """Take `model` as the network, or build it from `filenames` found in the folder or hub repository `model`.

        Args:
            model (`str`, `os.PathLike` or `torch.nn.Module`): The network itself, a folder or a hub id.
            filenames (`list[str]`): The weight files `_build_network` reads.
            what (`str`): What the files are, for errors and the log ("MiDaS depth weights").
            used_files (`list[str]`, *optional*):
                The files the maps depend on, fingerprinted for `cache_key`; by default all of `filenames`.
        """
        if isinstance(model, torch.nn.Module):
            # A loaded network has no files to fingerprint; `module_identity` is the best name it has.
            self.model_id, self._weights = module_identity(model), None
            self.network = model.eval()
            return
        self.model_id = os.fspath(model)
        paths = resolve_files(self.model_id, filenames, what=what, default_repo=DEFAULT_ANNOTATOR_REPO)
        used = set(used_files or filenames)
        self._weights = files_fingerprint([path for name, path in zip(filenames, paths) if name in used])
        logger.info("loading %s from %s", what, ", ".join(map(str, paths)))
        with weights_only_loading(what, paths):
            self.network = self._build_network(paths).eval()

    def _build_network(self, paths: list[Path]) -> torch.nn.Module:
        """The network, built by controlnet-aux from the weight files at `paths` (in `filenames` order)."""
        raise NotImplementedError

    def _network_input(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 `(b, H, W, 3)` -> `(b, 3, H', W')` in the network's range, padded up to `size_multiple`."""
        pixels = self._frames_to_tensor(frames)
        if self.is_input_signed:
            pixels = pixels * 2.0 - 1.0
        return pad_to_multiple(pixels, self.size_multiple)

    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """The network's raw maps `(b, c, h, w)` for the input of `_network_input`."""
        return self.network(pixels)

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        pixels = self._network_input(frames)
        return fit_prediction(self._predict(pixels).float(), pixels.shape[-2:], frames.shape[1:3])

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.network.to(device=device, dtype=dtype)

    def _settings(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            **{name: getattr(self, name) for name in self.variant_settings},
            "weights": self._weights,
            **{name: getattr(self, name) for name in self.tuning_settings},
            "dtype": str(self.dtype),
        }
