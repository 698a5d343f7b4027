"""Work that does not change during an edit is done once: the text encoder runs once per prompt set."""

import numpy as np
import torch

from ccedit.kinds import load_pipeline


def test_the_text_encoder_runs_once_per_prompt_set_whatever_the_windows_passes_and_steps():
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    frames = 12
    video = np.random.default_rng(0).integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(frames, 3, 32, 32)
    batches = []
    handle = pipe.text_encoder.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    kwargs = dict(num_inference_steps=2, window_length=6, output_type="latent", progress=False)
    # a hierarchical keyframe edit: two passes, several windows each, two evaluations per step
    result = pipe("a", video, [maps], keyframe=video[5], keyframe_index=5, guidance_scale=7.5, **kwargs)
    assert len(result.windows) == 2 and sum(result.windows) > 2
    assert batches == [1, 1]  # the prompt, then the negative prompt
    batches.clear()
    pipe(["a", "b"], video, [maps], guidance_scale=7.5, **kwargs)
    assert batches == [2, 2]  # each set in one call
    batches.clear()
    pipe("a", video, [maps], guidance_scale=1.0, **kwargs)
    assert batches == [1]  # no guidance, no negative prompt
    handle.remove()
