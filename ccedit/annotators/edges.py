"""Learned line and soft-edge maps through controlnet-aux networks: white lines on black, per frame.

The controlnet-aux detectors resize each image to 512 and return uint8 images; here their networks run on whole
batches at the working resolution (padded by reflection and cropped back) and return float maps directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ccedit.annotators.base import fit_prediction
from ccedit.annotators.detector import DetectorAnnotator
from ccedit.annotators.loading import DEFAULT_ANNOTATOR_REPO

LINEART_FILENAMES = ("sk_model.pth", "sk_model2.pth")  # fine, coarse
SOFTEDGE_FILENAMES = {"hed": "ControlNetHED.pth", "pidinet": "table5_pidinet.pth"}


class LineartEdges(DetectorAnnotator):
    """Line drawings from the informative-drawings generator (controlnet-aux `LineartDetector`) for lineart ControlNets.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`, defaults to `"lllyasviel/Annotators"`):
            A folder holding `sk_model.pth` and `sk_model2.pth`, a hub repository id, or a loaded generator mapping
            `(b, 3, H, W)` in `[0, 1]` to `(b, 1, H, W)` with dark lines on white.
        use_coarse_model (`bool`, defaults to `False`): Use the coarse generator (`sk_model2.pth`, bolder lines).
        size_multiple (`int`, defaults to 8): Padding multiple (the generator downsamples twice).
        batch_size (`int`, defaults to 4): Frames per forward pass.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "lineart"
    variant_settings = ("use_coarse_model",)
    tuning_settings = ("size_multiple",)

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_ANNOTATOR_REPO,
        use_coarse_model: bool = False,
        size_multiple: int = 8,
        batch_size: int = 4,
        show_progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.use_coarse_model = use_coarse_model
        self.size_multiple = size_multiple
        # LineartDetector.from_pretrained loads both generators, so both files must be there; the maps depend only
        # on the one in use.
        used_file = LINEART_FILENAMES[1] if use_coarse_model else LINEART_FILENAMES[0]
        self._load_network(model, list(LINEART_FILENAMES), what="lineart weights", used_files=[used_file])

    def _build_network(self, paths: list[Path]) -> torch.nn.Module:
        from controlnet_aux.lineart import LineartDetector

        detector = LineartDetector.from_pretrained(
            str(paths[0].parent), filename=paths[0].name, coarse_filename=paths[1].name
        )
        return detector.model_coarse if self.use_coarse_model else detector.model

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        # The generator draws dark lines on white paper; ControlNets expect white lines on black.
        return 1.0 - super()._annotate_batch(frames)


class SoftEdges(DetectorAnnotator):
    """Soft edge maps from HED (Xie & Tu 2015, controlnet-aux's Apache-2.0 re-train) or PiDiNet (Su et al. 2021).

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`, defaults to `"lllyasviel/Annotators"`):
            A folder holding the detector's weight file (`ControlNetHED.pth` or `table5_pidinet.pth`), a hub
            repository id, or a loaded network with the controlnet-aux forward of that detector.
        detector (`str`, defaults to `"hed"`): `"hed"` or `"pidinet"`.
        use_safe_step (`bool`, defaults to `False`):
            Quantise the map to a few levels, as ControlNet 1.1's "safe" soft-edge variants do to hide artefacts.
        size_multiple (`int`, defaults to 16): Padding multiple (both networks downsample four times).
        batch_size (`int`, defaults to 4): Frames per forward pass.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "softedge"
    variant_settings = ("detector", "use_safe_step")
    tuning_settings = ("size_multiple",)

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_ANNOTATOR_REPO,
        detector: str = "hed",
        use_safe_step: bool = False,
        size_multiple: int = 16,
        batch_size: int = 4,
        show_progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self._check_choice("detector", detector, SOFTEDGE_FILENAMES)
        self.detector = detector
        self.use_safe_step = use_safe_step
        self.size_multiple = size_multiple
        self._load_network(model, [SOFTEDGE_FILENAMES[detector]], what=f"{detector} soft edge weights")

    def _build_network(self, paths: list[Path]) -> torch.nn.Module:
        (path,) = paths
        if self.detector == "hed":
            from controlnet_aux.hed import HEDdetector

            return HEDdetector.from_pretrained(str(path.parent), filename=path.name).netNetwork
        from controlnet_aux.pidi import PidiNetDetector

        return PidiNetDetector.from_pretrained(str(path.parent), filename=path.name).netNetwork

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        pixels = self._network_input(frames)  # (b, 3, H', W') in [0, 1]
        padded_size = pixels.shape[-2:]
        if self.detector == "hed":
            # HED takes RGB in 0..255 (it subtracts a learned mean) and returns one side output per scale; the
            # map is the sigmoid of their mean at full resolution.
            side_outputs = self.network(pixels * 255.0)
            side_outputs = [
                F.interpolate(s.float(), size=padded_size, mode="bilinear", align_corners=False) for s in side_outputs
            ]
            edges = torch.sigmoid(torch.stack(side_outputs).mean(dim=0))
        else:
            # PiDiNet was trained on BGR in [0, 1]; its last output is the fused, already sigmoided map.
            edges = self.network(pixels.flip(1))[-1].float()
        edges = fit_prediction(edges, padded_size, frames.shape[1:3])  # (b, 1, H, W)
        if self.use_safe_step:
            edges = safe_step(edges)
        return edges


def safe_step(edges: torch.Tensor, step: int = 2) -> torch.Tensor:
    """Quantise a `[0, 1]` map to `step + 1` levels (ControlNet 1.1's "safe" soft edges), clamped to `[0, 1]`."""
    return (torch.floor(edges * (step + 1)) / step).clamp(0.0, 1.0)
