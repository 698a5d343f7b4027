"""Model CPU offload through accelerate's hooks: each network's hook fires when it is needed, the edit is unchanged.

This machine has no accelerator, so the hooks move networks from the CPU to the CPU; what is checked is that every
network is reached through its hook in the order an accelerator needs (a hook that never fires leaves its network
on the CPU while its inputs are on the accelerator), and that the results do not change.
"""

import numpy as np
import pytest
import torch

from ccedit.pipelines.keyframe_edit import edit_keyframe
from ccedit.kinds import load_pipeline

FRAMES = 6


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (FRAMES, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(FRAMES, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return video, maps


def edit(pipe, video, maps):
    return pipe("a", video, [maps], keyframe=video[2], keyframe_index=2, num_inference_steps=2, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(0), progress=False).frames


def record_hooks(pipe) -> list[str]:
    """The names of the networks whose offload hooks fire (move in) or offload (move out), in order."""
    events = []
    named = {"text_encoder": pipe.text_encoder, "main": pipe.trident().main, "vae": pipe.vae,
             "controlnet": pipe.controlnet, "appearance": pipe.appearance}
    for name, module in named.items():
        hook = module._hf_hook
        pre_forward = hook.pre_forward
        hook.pre_forward = lambda m, *a, name=name, pre_forward=pre_forward, **k: (
            events.append(name), pre_forward(m, *a, **k))[1]
    for hook, name in zip(pipe._side_branch_hooks, ("controlnet", "appearance")):
        offload = hook.offload
        hook.offload = lambda name=name, offload=offload: (events.append(f"out:{name}"), offload())[1]
    return events


def test_offload_hooks_fire_for_every_network_in_order_and_leave_the_edit_unchanged(inputs):
    video, maps = inputs
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    expected = edit(pipe, video, maps)

    pipe.enable_model_cpu_offload(device="cpu")
    assert pipe.offload_device == torch.device("cpu", 0)
    events = record_hooks(pipe)
    got = edit(pipe, video, maps)
    np.testing.assert_array_equal(got, expected)

    # text first; the keyframe is encoded by the VAE; then every network call goes through the main branch's hook
    # (the base UNet's own forward is never called); the side branches leave before the VAE decodes
    assert events[:3] == ["text_encoder", "text_encoder", "vae"]  # prompt, negative prompt, keyframe
    denoising = events[3: events.index("out:controlnet")]
    # moved in before the hint encoding, which calls a ControlNet's layer, not its forward
    assert denoising[:2] == ["controlnet", "appearance"]
    calls = denoising[2:]
    assert calls.count("main") >= 2 and calls.count("main") == calls.count("controlnet")
    assert events[events.index("out:controlnet"):] == ["out:controlnet", "out:appearance", "vae"]
    # the hooks are put back for the next call, as diffusers' pipelines do
    assert hasattr(pipe.trident().main, "_hf_hook") and len(pipe._all_hooks) == 5

    pipe.remove_all_hooks()
    assert pipe.offload_device is None
    assert not any(hasattr(m, "_hf_hook") for m in (pipe.trident().main, pipe.vae, pipe.text_encoder, pipe.controlnet))
    np.testing.assert_array_equal(edit(pipe, video, maps), expected)


def test_an_automatic_keyframe_under_offload_is_the_same_and_gives_the_hooks_back(inputs):
    video, maps = inputs
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    kwargs = dict(strength=0.6, num_inference_steps=3, generator=None)
    expected = edit_keyframe(pipe, "a", video[2], [maps[2]], **{**kwargs, "generator": torch.Generator().manual_seed(1)})
    pipe.enable_model_cpu_offload(device="cpu")
    got = edit_keyframe(pipe, "a", video[2], [maps[2]], **{**kwargs, "generator": torch.Generator().manual_seed(1)})
    np.testing.assert_array_equal(got, expected)
    # the image pipeline's hooks are gone and the video pipeline's are back
    assert not hasattr(pipe.unet, "_hf_hook")
    assert hasattr(pipe.trident().main, "_hf_hook") and pipe.offload_device == torch.device("cpu", 0)
    events = record_hooks(pipe)
    edit(pipe, video, maps)
    assert events[0] == "text_encoder" and "main" in events


def test_offload_without_an_accelerator_says_so():
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    if torch.cuda.is_available():
        pytest.skip("this machine has an accelerator")
    with pytest.raises(RuntimeError, match="accelerator"):
        pipe.enable_model_cpu_offload()
