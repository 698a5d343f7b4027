"""`CCEditPipeline.enable_channels_last`: the convolutional networks in channels-last layout give the same edit."""

import numpy as np
import pytest
import torch

from ccedit.kinds import load_pipeline


def convolution_weights(pipe) -> list[torch.Tensor]:
    nets = (pipe.unet, *pipe.controlnets, pipe.appearance, pipe.vae)
    return [p for net in nets for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]


@pytest.mark.parametrize("model", ["tiny", "animatediff-tiny"])
def test_channels_last_gives_the_same_edit(model):
    pipe = load_pipeline(model, device="cpu", dtype="float32")
    video = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def edit():
        return pipe("a", video, [maps], keyframe=video[1], keyframe_index=1, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), progress=False, output_type="latent").frames

    expected = edit()
    pipe.enable_channels_last()
    weights = convolution_weights(pipe)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                           for w in weights)
    got = edit()
    # oneDNN sums a channels-last convolution in another order: float32 rounding, grown over two steps of random
    # networks (a layout misread as NCHW would differ by the latents' whole size, about 1)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    pipe.disable_channels_last()
    assert all(w.is_contiguous() for w in convolution_weights(pipe))
    torch.testing.assert_close(edit(), expected, rtol=0, atol=0)
