"""Every error that needs no model comes before any model (pipeline or annotator) is loaded."""

from __future__ import annotations

import pytest

from ccedit.cli import main
from tests.conftest import VIDEOS
from tests.test_cli_safety import one_error_line


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


@pytest.fixture
def no_model_loads(monkeypatch):
    import ccedit.annotators
    import ccedit.annotators.registry
    from ccedit.pipelines import loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before a cheap check")

    monkeypatch.setattr(loading, "load_pipeline", must_not_load)
    monkeypatch.setattr(loading, "resolve_model_folder", must_not_load)
    monkeypatch.setattr(ccedit.annotators, "build_annotator", must_not_load)
    monkeypatch.setattr(ccedit.annotators.registry, "build_annotator", must_not_load)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--height", "65"], "multiple of 8"),
        (["--fps", "0"], "--fps"),
        (["--start", "100"], "past the end"),
        (["sampling.scheduler=eulr"], "unknown scheduler 'eulr'"),
        (["--structure", "cany"], "unknown annotator 'cany'"),
        (["model.dtype=float8"], "model.dtype"),
        (["--window", "4", "--overlap", "4"], "overlap"),
        (["--keyframe", "missing.png"], "does not exist"),
        (["-o", "{tmp}/o.avi"], "must end in .mp4"),
        (["-o", "{tmp}/folder.mp4"], "folder"),
        (["-o", "{tmp}/taken.mp4"], "--overwrite"),
    ],
)
def test_cheap_errors_come_before_any_model_loads(tmp_path, kitten, capsys, no_model_loads, args, expected):
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "taken.mp4").write_bytes(b"an earlier result")
    args = [a.format(tmp=tmp_path) for a in args]
    output = [] if "-o" in args else ["-o", str(tmp_path / "o.mp4")]
    assert main(["edit", kitten, "--prompt", "x", "--model", "tiny", "--frames", "4", *output, *args]) == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert (tmp_path / "taken.mp4").read_bytes() == b"an earlier result"
