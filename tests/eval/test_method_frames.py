"""Every evaluation method edits the frames the metrics see: the same frames, size and crop or pad."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.config import VideoConfig
from ccedit.editing import prepare_clip
from ccedit.errors import UserError
from ccedit.eval.config import EvalConfig, MethodSpec, VideoSettings
from ccedit.eval.runner import build_methods, fit_output, source_settings
from ccedit.io import write_image
from ccedit.methods import METHODS
from ccedit.methods.base import Method, MethodOutput


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """Six distinct 48x96 frames: a 64x64 evaluation crops their sides or pads them above and below."""
    folder = tmp_path_factory.mktemp("wide")
    xx = np.arange(96)[None, :, None]
    for k in range(6):
        frame = np.broadcast_to((xx * 2 + k * 20) % 256, (48, 96, 3)).astype(np.uint8)
        write_image(folder / f"{k:03d}.png", np.ascontiguousarray(frame))
    return folder


def methods(tmp_path, mode: str):
    config = EvalConfig(
        output=str(tmp_path / "out"),
        video=VideoSettings(num_frames=4, height=64, width=64, resize_mode=mode),
        methods=[
            MethodSpec("ccedit", "ccedit", {"overrides": ["model.path=tiny"]}),
            MethodSpec("animatediff", "animatediff", {"tiny": True, "annotator": "canny", "num_inference_steps": 2}),
            MethodSpec("wan_vace", "wan_vace", {"tiny": True, "annotator": "canny", "num_inference_steps": 1}),
            MethodSpec("folder", "folder", {"root": str(tmp_path), "pattern": "{video}.mp4"}),
        ],
    )
    return config, build_methods(config)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_every_method_reads_the_clip_as_the_metrics_do(tmp_path, wide_clip, mode):
    config, built = methods(tmp_path, mode)
    source = prepare_clip(wide_clip, source_settings(config)).frames
    assert source.shape == (4, 64, 64, 3)
    for name in ("animatediff", "wan_vace"):
        assert np.array_equal(prepare_clip(wide_clip, built[name].edit_settings()).frames, source), name
    assert np.array_equal(prepare_clip(wide_clip, built["ccedit"].cfg).frames, source)
    folder = built["folder"].selection
    assert {k: folder[k] for k in ("num_frames", "folder_fps")} == {"num_frames": 4, "folder_fps": 8.0}


class RecordingMethod(Method):
    """A method of a type the runner has never heard of: it keeps what it was built with."""

    type = "recording"

    def __init__(self, video: VideoConfig, colour: str = "red"):
        super().__init__(video)
        self.colour = colour


def test_a_method_of_any_type_receives_the_evaluations_frame_selection(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, RecordingMethod.type, RecordingMethod)
    video = VideoSettings(num_frames=5, fps=4.0, start=0.5, height=48, width=80, resize_mode="pad", folder_fps=6.0)
    config = EvalConfig(output=str(tmp_path / "out"), video=video,
                        methods=[MethodSpec("mine", "recording", {"colour": "blue"})])
    built = build_methods(config)["mine"]
    assert isinstance(built, RecordingMethod) and built.colour == "blue"
    assert built.video == VideoConfig(num_frames=5, fps=4.0, start=0.5, height=48, width=80, resize_mode="pad",
                                      folder_fps=6.0)
    assert built.video == source_settings(config).video


def test_a_method_option_cannot_choose_other_frames(tmp_path):
    config = EvalConfig(output=str(tmp_path / "out"), methods=[
        MethodSpec("ad", "animatediff", {"tiny": True, "annotator": "canny", "video": {"num_frames": 2}})])
    with pytest.raises(UserError, match="method 'ad'.*`video` is not a method option.*evaluation's `video`"):
        build_methods(config)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_a_result_of_another_size_is_fitted_as_the_source_was(wide_clip, mode):
    """A folder result at the clip's own 48x96 size lands on the evaluated frames' pixels in either mode."""
    from ccedit.io import read_video

    config = EvalConfig(video=VideoSettings(num_frames=4, height=64, width=64, resize_mode=mode))
    source = prepare_clip(wide_clip, source_settings(config)).frames
    result = read_video(wide_clip, num_frames=4).frames  # an 'edit' that changed nothing, at the source's size
    frames, _ = fit_output(MethodOutput(frames=result, fps=8.0), source, mode)
    assert np.abs(frames.astype(int) - source.astype(int)).max() <= 1
