"""Wan's causal VAE in bounded temporal chunks: the same latents and frames as diffusers' whole-clip calls."""

import pytest
import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline

from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts
from ccedit.pipelines.wan_vae import decode_latents, encode_frames

H, W = 16, 24  # not square, so a swapped height and width would show


@pytest.fixture(scope="module")
def pipe():
    pipe = WanVACEPipeline(**tiny_wan_vace_parts())
    return pipe


@pytest.fixture(scope="module")
def clip():
    """17 frames in [-1, 1]; the tests take the first 13 or all of them."""
    return torch.rand(1, 3, 17, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1


def pipeline_latents(pipe, video):
    """What WanVACEPipeline encodes for `video`, normalised: with a mask of zeros its latents are the video's own,
    followed by those of an empty reactive part."""
    latents = pipe.prepare_video_latents(video, torch.zeros_like(video), [[]], device=torch.device("cpu"))
    return latents[:, : pipe.vae.config.z_dim]


@pytest.mark.parametrize("frames", [13, 17])
@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_encode_equals_the_pipelines_latents(pipe, clip, frames, chunk):
    video = clip[:, :, :frames]
    ours = encode_frames(pipe.vae, video.split(chunk, dim=2))
    assert ours.shape == (1, 16, 1 + (frames - 1) // 4, H // 8, W // 8)
    torch.testing.assert_close(ours, pipeline_latents(pipe, video), rtol=1e-5, atol=1e-6)


def test_unnormalised_encode_is_the_posterior_mode(pipe, clip):
    with torch.no_grad():
        mode = pipe.vae.encode(clip).latent_dist.mode()
    ours = encode_frames(pipe.vae, clip.split(3, dim=2), normalise=False)
    torch.testing.assert_close(ours, mode, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(encode_frames(pipe.vae, [clip]), mode, atol=1e-2)  # the normalisation does act


@pytest.mark.parametrize("frames_per_chunk, sizes", [(None, [1, 4, 4, 4]), (3, [3, 3, 3, 3, 1]), (13, [13])])
def test_chunked_decode_equals_the_whole_decode(pipe, clip, frames_per_chunk, sizes):
    with torch.no_grad():
        latents = pipe.vae.encode(clip[:, :, :13]).latent_dist.mode()
        whole = pipe.vae.decode(latents).sample
    chunks = list(decode_latents(pipe.vae, latents, denormalise=False, frames_per_chunk=frames_per_chunk))
    assert [c.shape[2] for c in chunks] == sizes
    assert all(c.shape[:2] == (1, 3) and c.shape[3:] == (H, W) for c in chunks)
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, rtol=1e-5, atol=1e-6)


def test_decode_undoes_the_encodes_normalisation(pipe, clip):
    with torch.no_grad():
        whole = pipe.vae.decode(pipe.vae.encode(clip).latent_dist.mode()).sample
    ours = torch.cat(list(decode_latents(pipe.vae, encode_frames(pipe.vae, clip.split(5, dim=2)))), dim=2)
    torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-5)
    assert ours.abs().max() <= 1.0


def test_the_decoder_receives_one_latent_frame_per_call(pipe, clip):
    """The bound on memory, without timing anything: the decoder never holds more than one latent frame's input."""
    latents = encode_frames(pipe.vae, [clip])
    seen = []
    handle = pipe.vae.decoder.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[2]))
    try:
        for _ in decode_latents(pipe.vae, latents, frames_per_chunk=2):
            pass
    finally:
        handle.remove()
    assert seen == [1] * latents.shape[2]


@pytest.mark.parametrize("frames", [0, 2, 6, 16])
def test_a_clip_not_of_4k_plus_1_frames_is_refused(pipe, clip, frames):
    with pytest.raises(ValueError, match=rf"4k\+1 .*got {frames or 'none'}"):
        encode_frames(pipe.vae, clip[:, :, :frames].split(4, dim=2) if frames else [])


@pytest.mark.parametrize("chunks, named", [
    ([torch.zeros(3, 5, H, W)], r"\(1, 3, n, H, W\)"),
    ([torch.zeros(1, 4, 5, H, W)], r"\(1, 3, n, H, W\)"),
    ([torch.zeros(1, 3, 1, H, W), torch.zeros(1, 3, 4, H, 2 * W)], "first chunk's size"),
])
def test_chunks_of_the_wrong_shape_are_refused(pipe, chunks, named):
    with pytest.raises(ValueError, match=named):
        encode_frames(pipe.vae, chunks)


def test_bad_decode_arguments_are_refused_before_any_decoding(pipe):
    seen = []
    handle = pipe.vae.decoder.register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    try:
        with pytest.raises(ValueError, match="frames_per_chunk"):
            decode_latents(pipe.vae, torch.zeros(1, 16, 2, 2, 3), frames_per_chunk=0)
        with pytest.raises(ValueError, match=r"\(1, 16, t, h, w\)"):
            decode_latents(pipe.vae, torch.zeros(1, 8, 2, 2, 3))
    finally:
        handle.remove()
    assert seen == []


def test_a_patchified_vae_chunks_the_same():
    """A VAE with `patch_size` (Wan2.2's layout: 2x2 pixels per input position, residual blocks) patchifies each
    group of frames and unpatchifies each decoded chunk, as diffusers does for the whole clip."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, is_residual=True,
                           temperal_downsample=[False, True, True], in_channels=12, out_channels=12, patch_size=2,
                           scale_factor_spatial=16, latents_mean=[0.1, 0.2, -0.3, 0.4],
                           latents_std=[1.5, 0.5, 2.0, 1.0]).eval()
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mode = vae.encode(video).latent_dist.mode()
        whole = vae.decode(mode).sample
    torch.testing.assert_close(encode_frames(vae, video.split(3, dim=2), normalise=False), mode, rtol=1e-5, atol=1e-6)
    chunks = list(decode_latents(vae, mode, denormalise=False))
    assert [c.shape[1:3] for c in chunks] == [(3, 1), (3, 4), (3, 4)]
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, rtol=1e-5, atol=1e-6)


def test_an_offloaded_vae_is_brought_in_before_it_encodes_and_decodes(clip):
    """The encoder and decoder are called directly, so the VAE's own offload hook is fired by hand, as diffusers'
    `encode` and `decode` fire it (here it moves the VAE from the CPU to the CPU; what counts is that it fires)."""
    from accelerate import cpu_offload_with_hook

    vae = tiny_wan_vace_parts()["vae"]
    video = clip[:, :, :5]
    plain = encode_frames(vae, [video])
    cpu_offload_with_hook(vae, execution_device="cpu")
    fired, pre_forward = [], vae._hf_hook.pre_forward

    def recorded(module, *args, **kwargs):
        fired.append(module)
        return pre_forward(module, *args, **kwargs)

    vae._hf_hook.pre_forward = recorded
    latents = encode_frames(vae, [video])
    assert fired == [vae]
    frames = list(decode_latents(vae, latents))
    assert fired == [vae, vae]
    torch.testing.assert_close(latents, plain)
    assert [f.shape[2] for f in frames] == [1, 4]


def test_decoded_frames_are_clamped_unless_the_config_says_not_to():
    vae = tiny_wan_vace_parts()["vae"]
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(50)  # frames well outside [-1, 1] before the clamp
    latents = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(2))
    clamped = torch.cat(list(decode_latents(vae, latents, denormalise=False)), dim=2)
    with torch.no_grad():
        torch.testing.assert_close(clamped, vae.decode(latents).sample, rtol=1e-5, atol=1e-6)
    vae.register_to_config(clip_output=False)
    unclamped = torch.cat(list(decode_latents(vae, latents, denormalise=False)), dim=2)
    assert unclamped.abs().max() > 1.5 and clamped.abs().max() == 1.0
    torch.testing.assert_close(unclamped.clamp(-1, 1), clamped)
