"""Keyframe fidelity of keyframe-guided edits: does the clip reproduce the keyframe where it was placed, and does
the rest of the clip keep its appearance?"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ccedit.errors import InvalidInputError
from ccedit.metrics.base import EditSample, Metric, fit_image
from ccedit.metrics.clip import ClipMetric


class KeyframeMSE(Metric):
    """Mean squared RGB difference (values in [0, 1]) between the output frame at each keyframe's index and that
    keyframe, averaged over keyframes. 0 means the keyframe is reproduced exactly; lower is better."""

    name = "keyframe_mse"
    higher_is_better = False
    requires = ("keyframes",)

    def _score(self, sample: EditSample) -> float:
        height, width = sample.frames.shape[1:3]
        errors = []
        for index, keyframe in sorted(sample.keyframes.items()):
            frame = torch.from_numpy(sample.frames[index]).float() / 255
            target = torch.from_numpy(fit_image(keyframe, height, width)).float() / 255
            errors.append(((frame - target) ** 2).mean().item())
        return float(np.mean(errors))

    def _record(self) -> dict[str, Any]:
        return {
            "backbone": None,
            "scale": "mean squared error of RGB in [0, 1]",
            "pairing": "the output frame at each keyframe's index with that keyframe, mean over keyframes",
            "resolution": "the edited frames' size (keyframes resized to it, area filter)",
            "precision": "float32",
        }


class KeyframeClipFidelity(ClipMetric):
    """Mean CLIP cosine between every frame that is not a keyframe and the keyframe nearest to it in time (the earlier
    one on a tie), on ViT-L/14: 1 means the whole clip looks like its keyframes."""

    name = "keyframe_clip"
    requires = ("keyframes",)
    pairing = "each non-keyframe frame with the nearest keyframe (earlier on a tie), mean over those frames"
    reference = "ccedit (keyframe-guided editing has no public reference metric)"

    def _score(self, sample: EditSample) -> float:
        indices = sorted(sample.keyframes)
        others = [t for t in range(len(sample.frames)) if t not in sample.keyframes]
        if not others:
            raise InvalidInputError(f"metric {self.name!r}: every frame is a keyframe, so there is nothing to compare")
        keyframes = self.clip.image_embeds([sample.keyframes[i] for i in indices])
        frames = self.clip.image_embeds(sample.frames[others])
        nearest = [min(range(len(indices)), key=lambda k: (abs(indices[k] - t), indices[k])) for t in others]
        return (frames * keyframes[nearest]).sum(dim=-1).mean().item()
