"""Frames to and from the VAE go through diffusers' `VideoProcessor`, with the values ccedit has always given it:
uint8 `/ 255 * 2 - 1` in, `(x + 1) / 2` clamped and rounded out, bit for bit (the golden edits pin whole edits)."""

import numpy as np
import PIL.Image
import pytest
import torch

from ccedit.errors import InvalidInputError
from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.pipeline_calls import check_video
from ccedit.pipelines.pipeline_ccedit import _image_to_tensor, _video_chunk_to_tensor
from ccedit.pipelines.tiny import tiny_components


@pytest.fixture(scope="module")
def frames():
    return np.random.RandomState(0).randint(0, 256, (5, 16, 24, 3), dtype=np.uint8)


def test_a_uint8_chunk_becomes_minus_one_to_one_bit_for_bit_in_the_same_layout(frames):
    expected = torch.from_numpy(frames[1:4]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    chunk = _video_chunk_to_tensor(frames, 1, 4)
    assert chunk.dtype == torch.float32 and torch.equal(chunk, expected)
    assert chunk.stride() == expected.stride()  # the VAE's kernels see the layout they saw before
    assert chunk.min() == -1 and chunk.max() == 1


def test_a_float_chunk_in_unit_range_becomes_minus_one_to_one_bit_for_bit():
    video = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(_video_chunk_to_tensor(video, 0, 3), video[:3].float() * 2 - 1)


def test_every_keyframe_form_converts_as_the_uint8_frames_do(frames):
    expected = (torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255)[None] * 2 - 1
    as_tensor = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255
    rgba = PIL.Image.fromarray(frames[0]).convert("RGBA")
    for image in (frames[0], PIL.Image.fromarray(frames[0]), rgba, as_tensor):
        converted = _image_to_tensor(image)
        assert converted.shape == (1, 3, 16, 24) and torch.equal(converted, expected), type(image)


@pytest.mark.parametrize("low, high", [(-0.5, 1.0), (0.0, 255.0)])
def test_float_frames_outside_zero_to_one_are_one_line(low, high):
    video = torch.full((2, 3, 8, 8), low)
    video[0, 0, 0, 0] = high
    with pytest.raises(InvalidInputError, match=r"`video` as a tensor must hold values in \[0, 1\]") as error:
        check_video(video)
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidInputError, match=r"`keyframe` as a tensor must hold values in \[0, 1\]"):
        _image_to_tensor(video[0])


def test_decoded_frames_are_the_vae_output_mapped_to_zero_to_one_and_rounded():
    pipe = CCEditPipeline(**tiny_components(keyframe=False))
    latents = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        raw = pipe.vae.decode(latents[0].transpose(0, 1) / pipe.vae.config.scaling_factor).sample
        as_float = pipe.decode_latents(latents)
        as_uint8 = pipe.decode_latents(latents, as_uint8=True)
    unit = ((raw + 1) / 2).clamp(0, 1)
    assert torch.equal(as_float[0], unit)
    assert torch.equal(as_uint8[0], (unit.permute(0, 2, 3, 1) * 255).round().to(torch.uint8))
