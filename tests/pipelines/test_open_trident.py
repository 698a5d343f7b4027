"""The open trident (AnimateDiff motion modules + ControlNet) against diffusers' own pipeline on the same weights."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AnimateDiffVideoToVideoControlNetPipeline, UNetMotionModel

from ccedit.models.motion import motion_unet
from ccedit.pipelines import CCEditPipeline
from ccedit.pipelines.tiny import tiny_animatediff_components

FRAMES, H, W = 4, 64, 64


@pytest.fixture(scope="module")
def components():
    return tiny_animatediff_components()


@pytest.fixture(scope="module")
def clip():
    rng = np.random.RandomState(0)
    video = (rng.rand(FRAMES, H, W, 3) * 255).astype(np.uint8)
    maps = (rng.rand(FRAMES, H, W, 3) > 0.7).astype(np.uint8) * 255
    return video, maps


@pytest.mark.parametrize("strength,steps", [(1.0, 3), (0.6, 10)])
def test_without_appearance_it_equals_diffusers_animatediff_video_to_video_controlnet(components, clip, strength,
                                                                                      steps):
    video, maps = clip
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, FRAMES, H // 8, W // 8, generator=g)  # DDIM: init_noise_sigma 1, no scaling
    ours = CCEditPipeline(**components)
    mine = ours("a watercolor painting", video, [torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255],
                num_inference_steps=steps, guidance_scale=7.5, latents=noise, strength=strength, progress=False,
                output_type="latent").frames
    peer = AnimateDiffVideoToVideoControlNetPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], motion_adapter=components["temporal"], controlnet=components["controlnet"],
        scheduler=ours.scheduler,
    )
    peer.set_progress_bar_config(disable=True)
    # Given `latents` (and no video), diffusers starts from them as they are on the timesteps its `get_timesteps`
    # keeps for `strength`. Below 1 they are the source's latents (the posterior mean, as ccedit encodes) noised to
    # its first kept timestep: 6 of 10 steps at 0.6, where CCEdit's own rule keeps 5.
    start = noise
    if strength < 1:
        peer.scheduler.set_timesteps(steps)
        kept, _ = peer.get_timesteps(steps, peer.scheduler.timesteps, strength, "cpu")
        assert len(kept) == 6
        pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            source = components["vae"].encode(pixels).latent_dist.mode() * components["vae"].config.scaling_factor
        start = peer.scheduler.add_noise(source.transpose(0, 1)[None], noise, kept[:1])
    theirs = peer(
        prompt="a watercolor painting", strength=strength,
        conditioning_frames=[PIL.Image.fromarray(m) for m in maps], num_inference_steps=steps, guidance_scale=7.5,
        latents=start, output_type="latent", height=H, width=W,
    ).frames
    torch.testing.assert_close(mine, theirs.to(mine.dtype), atol=1e-4, rtol=1e-4)


def test_the_motion_unet_shares_the_base_and_equals_diffusers_own_conversion(components):
    shared = motion_unet(components["unet"], components["temporal"])
    copied = UNetMotionModel.from_unet2d(components["unet"], components["temporal"])
    assert shared.down_blocks[0].resnets is components["unet"].down_blocks[0].resnets
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(3, 77, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(shared(x, 500, text).sample, copied(x, 500, text).sample)


def test_the_open_trident_edits_from_the_command_line(tmp_path):
    import json

    from ccedit.cli import main
    from ccedit.io import video_info
    from tests.conftest import VIDEOS

    out = tmp_path / "o.mp4"
    assert main(["edit", str(VIDEOS / "kitten.mp4"), "--prompt", "x", "--model", "animatediff-tiny",
                 "--frames", "6", "--steps", "1", "--window", "4", "-o", str(out),
                 f"structure.cache_dir={tmp_path / 'cache'}"]) == 0
    assert video_info(out)[0] == 6
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["config"]["sampling"]["scheduler"] == "ddim" and side["windows"]["per_pass"] == [2]


@pytest.mark.parametrize("indices", [[0], [0, 8]])
def test_sparsectrl_keyframes_give_the_denoiser_output_of_diffusers_sparsectrl_pipeline(indices):
    from diffusers import AnimateDiffSparseControlNetPipeline

    components = tiny_animatediff_components(appearance=True)
    ours = CCEditPipeline(**{**components, "controlnet": None})  # the structure branch off
    peer = AnimateDiffSparseControlNetPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], motion_adapter=components["temporal"], controlnet=components["appearance"],
        scheduler=ours.scheduler,
    )
    frames = 9
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, frames, 8, 8, generator=g)
    keyframe_latents = torch.randn(len(indices), 4, 8, 8, generator=g)
    t = torch.tensor(600)
    with torch.no_grad():
        positive, negative = peer.encode_prompt("a watercolor painting", torch.device("cpu"), 1, True, "")
        text = torch.cat([negative, positive])
        condition, mask = peer.prepare_sparse_control_conditioning(
            keyframe_latents.transpose(0, 1)[None], frames, indices, torch.device("cpu"), torch.float32
        )
        doubled = torch.cat([x, x])
        per_frame = text.repeat_interleave(frames, dim=0)
        down, mid = peer.controlnet(doubled, t, encoder_hidden_states=per_frame, controlnet_cond=condition,
                                    conditioning_mask=mask, conditioning_scale=1.0, return_dict=False)
        theirs = peer.unet(doubled, t, encoder_hidden_states=per_frame, down_block_additional_residuals=down,
                           mid_block_additional_residual=mid).sample
        mine = ours.trident()(doubled, t, text, appearance_condition=(keyframe_latents[None], indices))
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    assert (mine - ours.trident()(doubled, t, text)).abs().max() > 1e-3  # the keyframes act


@pytest.mark.parametrize("index", [0, 5])
def test_a_sparsectrl_keyframe_anywhere_in_one_window_equals_diffusers_sparsectrl_pipeline(index):
    from diffusers import AnimateDiffSparseControlNetPipeline

    components = tiny_animatediff_components(appearance=True)
    # diffusers encodes conditioning frames by sampling the VAE's posterior, ccedit takes its mean: a posterior of
    # (almost) no spread (log-variance at its floor, -30) makes the two the same encoding
    quant_conv = components["vae"].quant_conv
    with torch.no_grad():
        quant_conv.weight[4:] = 0
        quant_conv.bias[4:] = -30
    ours = CCEditPipeline(**{**components, "controlnet": None})  # the structure branch off
    peer = AnimateDiffSparseControlNetPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], motion_adapter=components["temporal"], controlnet=components["appearance"],
        scheduler=ours.scheduler,
    )
    peer.set_progress_bar_config(disable=True)
    frames = 16
    rng = np.random.RandomState(index)
    video = (rng.rand(frames, H, W, 3) * 255).astype(np.uint8)
    keyframe = (rng.rand(H, W, 3) * 255).astype(np.uint8)
    noise = torch.randn(1, 4, frames, H // 8, W // 8, generator=torch.Generator().manual_seed(index))
    # diffusers keeps no keyframe latent: ccedit's pinning off, so both leave the keyframe's frame to the model
    result = ours("a watercolor painting", video, keyframe=keyframe, keyframe_index=index, num_inference_steps=3,
                  latents=noise, pin_keyframes=False, progress=False, output_type="latent")
    theirs = peer(prompt="a watercolor painting", num_frames=frames, height=H, width=W, num_inference_steps=3,
                  conditioning_frames=[PIL.Image.fromarray(keyframe)], controlnet_frame_indices=[index],
                  latents=noise, output_type="latent").frames
    # the random tiny networks leave latents of magnitude ~70: equal to float rounding relative to that scale
    assert (result.frames - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert result.windows == [1]  # the clip's own window, with the keyframe where it is


def test_the_open_trident_is_keyframe_guided_from_the_command_line(tmp_path):
    import json

    from ccedit.cli import main
    from tests.conftest import VIDEOS

    clip = str(VIDEOS / "kitten.mp4")
    args = ["edit", clip, "--prompt", "x", "--model", "animatediff-tiny", "--frames", "6", "--steps", "1",
            f"structure.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "--keyframe", "auto@2", "-o", str(tmp_path / "o.mp4")]) == 0
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["keyframes"][0]["auto"] and (tmp_path / "o.keyframe2.png").is_file()


def test_the_open_trident_loads_from_its_parts_folders_and_equals_the_tiny_one(tmp_path):
    from ccedit.errors import ModelNotFoundError
    from ccedit.kinds import load_pipeline

    parts = tiny_animatediff_components()
    for name in ("vae", "text_encoder", "tokenizer", "unet"):
        parts[name].save_pretrained(tmp_path / "base" / name)
    parts["temporal"].save_pretrained(tmp_path / "motion")
    parts["controlnet"].save_pretrained(tmp_path / "controlnet")
    parts["appearance"].save_pretrained(tmp_path / "sparsectrl")
    folders = {"base": str(tmp_path / "base"), "motion_adapter": str(tmp_path / "motion"),
               "controlnet": str(tmp_path / "controlnet"), "sparsectrl": str(tmp_path / "sparsectrl")}
    loaded = load_pipeline("animatediff", parts=folders, scheduler="ddim")
    tiny = load_pipeline("animatediff-tiny", scheduler="ddim")
    assert loaded.config.sampling_convention == "diffusers"
    rng = np.random.RandomState(0)
    video = (rng.rand(FRAMES, H, W, 3) * 255).astype(np.uint8)
    maps = torch.rand(FRAMES, 3, H, W, generator=torch.Generator().manual_seed(0))
    keyframe = (rng.rand(H, W, 3) * 255).astype(np.uint8)

    def edit(pipe):
        return pipe("x", video, [maps], keyframe=keyframe, keyframe_index=1, num_inference_steps=2, progress=False,
                    generator=torch.Generator().manual_seed(0), output_type="latent").frames

    torch.testing.assert_close(edit(loaded), edit(tiny))

    # the memory model reads the same parts' configs: every network with the loaded one's parameters
    from ccedit.kinds import model_skeleton

    skeleton = model_skeleton("animatediff", parts=folders)
    for name in ("unet", "temporal", "appearance", "vae", "text_encoder"):
        shapes = {k: tuple(v.shape) for k, v in getattr(skeleton, name).state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in getattr(loaded, name).state_dict().items()}, name
    assert [n.config.block_out_channels for n in skeleton.controlnets] == [loaded.controlnet.config.block_out_channels]
    assert model_skeleton("animatediff", parts={**folders, "base": "someone/not-cached"}) is None

    with pytest.raises(ModelNotFoundError, match="lacks motion_adapter"):
        load_pipeline("animatediff", parts={"base": folders["base"], "controlnet": folders["controlnet"]})
