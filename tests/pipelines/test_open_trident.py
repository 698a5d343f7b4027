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


def test_without_appearance_it_equals_diffusers_animatediff_video_to_video_controlnet(components, clip):
    video, maps = clip
    g = torch.Generator().manual_seed(0)
    start = torch.randn(1, 4, FRAMES, H // 8, W // 8, generator=g)  # DDIM: init_noise_sigma 1, no scaling
    ours = CCEditPipeline(**components)
    mine = ours("a watercolor painting", video, [torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255],
                num_inference_steps=3, guidance_scale=7.5, latents=start, progress=False, output_type="latent").frames
    peer = AnimateDiffVideoToVideoControlNetPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], motion_adapter=components["temporal"], controlnet=components["controlnet"],
        scheduler=ours.scheduler,
    )
    peer.set_progress_bar_config(disable=True)
    # given `latents` (and no video), diffusers starts from them as they are, like ccedit with a DDIM scheduler
    theirs = peer(
        prompt="a watercolor painting", strength=1.0,
        conditioning_frames=[PIL.Image.fromarray(m) for m in maps], num_inference_steps=3, guidance_scale=7.5,
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
    from tests.conftest import VIDEOS, require

    out = tmp_path / "o.mp4"
    assert main(["edit", str(require(VIDEOS / "kitten.mp4")), "--prompt", "x", "--model", "animatediff-tiny",
                 "--frames", "6", "--steps", "1", "--window", "4", "-o", str(out),
                 f"structure.cache_dir={tmp_path / 'cache'}"]) == 0
    assert video_info(out)[0] == 6
    side = json.loads((tmp_path / "o.mp4.json").read_text())
    assert side["config"]["sampling"]["scheduler"] == "ddim" and side["windows"]["per_pass"] == [2]
