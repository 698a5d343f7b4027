"""Sample videos during training: the model as it is at a step, editing the first training clip, written to
`<output>/samples/step-<N>.mp4` so a run can be watched as it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.centre import centre_frame
from .config import TrainConfig
from .data import VideoEntry
from .model import TrainingModels


def write_sample(models: TrainingModels, trident, entry: VideoEntry, config: TrainConfig, output: Path, step: int,
                 device: torch.device) -> Path:
    """Edit the first `data.num_frames` frames of `entry` with `train.sample_prompt` using the weights being trained
    (the model's own sampler, `train.sample_steps` steps) and write the result; returns its path."""
    from ..annotators import build_annotator
    from ..io import fit_frames, read_video, write_video
    from ..pipelines import CCEditPipeline

    d, t = config.data, config.train
    clip = read_video(entry.path, num_frames=min(d.num_frames, entry.num_frames), fps=d.fps)
    frames, _ = fit_frames(clip.frames, (d.height, d.width))
    maps = build_annotator(d.annotator, **d.annotator_options)(frames)
    pipe = CCEditPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, **trident.main.components(),
        controlnet=list(trident.structure), scheduler=models.scheduler, appearance=trident.appearance,
        sampling_convention=models.sampling_convention,
    )
    was_training = trident.training
    trident.eval()
    keyframe = {"keyframe": frames[centre_frame(len(frames))]} if trident.appearance is not None else {}
    result = pipe(t.sample_prompt, frames, [maps], num_inference_steps=t.sample_steps, progress=False,
                  generator=torch.Generator().manual_seed(t.seed), **keyframe)
    trident.train(was_training)
    path = output / "samples" / f"step-{step}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.ascontiguousarray(result.frames[0]), clip.fps)
    return path
