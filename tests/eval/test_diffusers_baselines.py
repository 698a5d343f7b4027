"""diffusers' video pipelines as evaluation baselines, on tiny random parts offline: through `ccedit eval`, and equal
to calling the diffusers pipeline directly."""

from dataclasses import asdict

import numpy as np
import PIL.Image
import pytest
import torch

from ccedit.config import EditJob, VideoConfig
from ccedit.errors import UserError
from ccedit.methods import build_method
from tests.eval.baseline_eval import check_baseline_rows
from tests.conftest import VIDEOS

VIDEO = {"num_frames": 3, "height": 64, "width": 64}  # the evaluation's `video` section
SELECTION = VideoConfig(**VIDEO)
PROMPT = "a watercolor painting of a kitten"


def animatediff(**options):
    return build_method("animatediff", SELECTION, tiny=True, annotator="canny", num_inference_steps=2,
                        strength=0.9, **options)


@pytest.fixture
def animatediff_edit():  # function scope: runs after the suite's one-thread setting, like the direct call
    method = animatediff()
    job = EditJob(input=str(VIDEOS / "kitten.mp4"), prompt=PROMPT)
    return method, job, method.run(job, {})


def test_animatediff_equals_the_diffusers_pipeline_called_directly(animatediff_edit):
    from diffusers import AnimateDiffVideoToVideoControlNetPipeline

    from ccedit.annotators import build_annotator
    from ccedit.io import fit_frames, read_video
    from ccedit.methods.diffusers_baselines import tiny_animatediff_parts
    from ccedit.schedulers import build_scheduler

    method, job, out = animatediff_edit
    frames = fit_frames(read_video(job.input, num_frames=3).frames, (64, 64), "crop")[0]
    maps = (build_annotator("canny")(frames) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pipe = AnimateDiffVideoToVideoControlNetPipeline(**tiny_animatediff_parts(), scheduler=build_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        video=[PIL.Image.fromarray(f) for f in frames], prompt=PROMPT,
        conditioning_frames=[PIL.Image.fromarray(m) for m in maps], height=64, width=64, num_inference_steps=2,
        guidance_scale=7.5, strength=0.9, generator=torch.Generator().manual_seed(0), output_type="pil",
    ).frames[0]
    np.testing.assert_array_equal(out.structure, maps)
    np.testing.assert_array_equal(out.frames, np.stack([np.asarray(f) for f in theirs]))
    assert out.frames.shape == (3, 64, 64, 3) and out.seconds > 0
    # The seed reaches the pipeline: another one gives another edit.
    other = animatediff(seed=1).run(job, {})
    assert np.abs(other.frames.astype(int) - out.frames).mean() > 1


def test_the_description_holds_every_setting_that_changes_a_result():
    tiny = animatediff().describe()
    assert tiny["type"] == "animatediff" and tiny["tiny"] and "base" not in tiny
    assert tiny["num_inference_steps"] == 2 and tiny["strength"] == 0.9 and tiny["video"] == asdict(SELECTION)
    assert animatediff(seed=1).describe() != tiny
    hub = build_method("animatediff", SELECTION, controlnet="lllyasviel/control_v11p_sd15_canny",
                       annotator="canny").describe()
    assert hub["controlnet"] == "lllyasviel/control_v11p_sd15_canny" and hub["base"].endswith("stable-diffusion-v1-5")


@pytest.mark.parametrize("options, named", [
    ({"strength": 0}, "strength"), ({"num_inference_steps": 1.5}, "num_inference_steps"),
    ({"annotator": "sketch"}, "annotator"), ({"scheduler": "heun"}, "scheduler"), ({"steps": 2}, "steps"),
    ({"num_inference_steps": 1, "strength": 0.8}, "runs no step"),
])
def test_bad_options_are_one_line_naming_the_option(options, named):
    with pytest.raises(UserError, match=named):
        build_method("animatediff", SELECTION, tiny=True, **options)


def test_an_offline_hub_id_names_the_option_for_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    method = build_method("animatediff", SELECTION, base="nobody/no-such-base", annotator="canny")
    with pytest.raises(UserError, match="base=DIR"):
        method.run(EditJob(input=str(VIDEOS / "kitten.mp4"), prompt=PROMPT), {})


def test_animatediff_rows_come_through_ccedit_eval(tmp_path):
    check_baseline_rows(tmp_path, "animatediff-tiny", "animatediff", {"tiny": True, "annotator": "canny", "num_inference_steps": 2}, VIDEO)


def test_the_baselines_example_config_loads_and_builds_its_methods_without_loading_a_model():
    from ccedit.eval import load_eval_config
    from ccedit.eval.runner import build_methods
    from tests.conftest import REPO

    config = load_eval_config(REPO / "configs" / "eval" / "baselines.yaml")
    methods = build_methods(config)
    types = {name: method.describe()["type"] for name, method in methods.items()}
    assert set(types.values()) >= {"ccedit", "animatediff", "wan_vace"}
    assert all(m._pipe is None for m in methods.values() if hasattr(m, "_pipe"))
