"""Wan2.1-VACE (diffusers' `WanVACEPipeline`) as an evaluation baseline, on tiny random parts offline."""


import numpy as np
import PIL.Image
import pytest
import torch

from ccedit.config import EditJob, KeyframeSpec, VideoConfig
from ccedit.errors import UserError
from ccedit.methods import build_method
from ccedit.methods.wan_vace import wan_frame_count
from ccedit.pipelines.tiny_wan import tiny_t5_tokenizer
from tests.eval.baseline_eval import check_baseline_rows
from tests.conftest import KEYFRAME, VIDEOS

VIDEO = {"num_frames": 3, "height": 32, "width": 32}  # the evaluation's `video` section
SELECTION = VideoConfig(**VIDEO)
PROMPT = "a watercolor painting of a kitten"


def wan_vace(**options):
    return build_method("wan_vace", SELECTION, tiny=True, annotator="canny", num_inference_steps=2, **options)


def test_wan_frame_counts_are_four_k_plus_one():
    assert [wan_frame_count(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 5, 5, 5, 5, 9, 9]


def test_the_tiny_tokenizer_ends_texts_with_eos_and_pads_with_zero():
    tok = tiny_t5_tokenizer()
    ids = tok(["a cat"], padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    assert ids.input_ids[0, ids.attention_mask[0].sum() - 1] == tok.eos_token_id
    assert ids.input_ids[0, -1] == tok.pad_token_id == 0
    assert tok.unk_token_id not in ids.input_ids[0].tolist()


def test_wan_vace_equals_the_diffusers_pipeline_called_directly():
    from diffusers import WanVACEPipeline

    from ccedit.annotators import build_annotator
    from ccedit.annotators.maps import hold
    from ccedit.io import fit_frames, read_video
    from ccedit.pipelines.tiny_wan import tiny_wan_vace_parts

    job = EditJob(input=str(VIDEOS / "kitten.mp4"), prompt=PROMPT)
    out = wan_vace().run(job, {})
    frames = fit_frames(read_video(job.input, num_frames=3).frames, (32, 32), "crop")[0]
    maps = hold(build_annotator("canny")(frames)).permute(0, 2, 3, 1).numpy()
    pipe = WanVACEPipeline(**tiny_wan_vace_parts())
    pipe.set_progress_bar_config(disable=True)
    # Wan takes 4k+1 frames: the last map repeated to 5, the result cut back to 3.
    control = [PIL.Image.fromarray(m) for m in [*maps, maps[-1], maps[-1]]]
    theirs = pipe(prompt=PROMPT, video=control, height=32, width=32, num_frames=5, num_inference_steps=2,
                  guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="pil").frames[0]
    np.testing.assert_array_equal(out.structure, maps)
    np.testing.assert_array_equal(out.frames, np.stack([np.asarray(f) for f in theirs[:3]]))
    # The seed and the prompt reach the pipeline.
    assert np.abs(wan_vace(seed=1).run(job, {}).frames.astype(int) - out.frames).mean() > 1
    assert not np.array_equal(wan_vace().run(EditJob(input=job.input, prompt="a red car"), {}).frames, out.frames)


def test_keyframe_images_become_reference_images():
    keyframe = KEYFRAME
    method = wan_vace()
    plain = EditJob(input=str(VIDEOS / "kitten.mp4"), prompt=PROMPT)
    guided = EditJob(input=plain.input, prompt=PROMPT, keyframes=[KeyframeSpec(str(keyframe))])
    refs = method.reference_images(guided, (32, 32))
    assert len(refs) == 1 and refs[0].size == (32, 32) and method.reference_images(plain, (32, 32)) is None
    assert not np.array_equal(method.run(guided, {}).frames, method.run(plain, {}).frames)


@pytest.mark.parametrize("video, options, named", [
    ({"height": 40}, {}, "multiples of 16"), ({}, {"conditioning_scale": -1}, "conditioning_scale"),
    ({}, {"annotator": "sketch"}, "annotator"), ({}, {"flow_shift": 3}, "flow_shift"),
])
def test_bad_options_are_one_line_naming_the_option(video, options, named):
    with pytest.raises(UserError, match=named):
        build_method("wan_vace", VideoConfig(**video), tiny=True, **options)


def test_an_offline_hub_id_names_the_option_for_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    method = build_method("wan_vace", SELECTION, model="nobody/no-such-vace", annotator="canny")
    assert method.describe()["model"] == "nobody/no-such-vace"
    with pytest.raises(UserError, match="model=DIR"):
        method.run(EditJob(input=str(VIDEOS / "kitten.mp4"), prompt=PROMPT), {})


def test_wan_vace_rows_come_through_ccedit_eval(tmp_path):
    check_baseline_rows(tmp_path, "wan-vace-tiny", "wan_vace", {"tiny": True, "annotator": "canny", "num_inference_steps": 1}, VIDEO)
