"""A first try is quiet: the one line of an error or warning, not the libraries' own output, and each warning once."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from ccedit.cli import main
from ccedit.config import load_edit_config
from ccedit.io import read_video, write_video
from tests.conftest import REPO


@pytest.mark.parametrize("content", ["random", "text", "truncated"])
def test_a_corrupt_video_gets_one_line_and_no_decoder_output(tmp_path, capfd, content):
    bad = tmp_path / "bad.mp4"
    if content == "random":
        bad.write_bytes(np.random.RandomState(0).bytes(5000))
    elif content == "text":
        bad.write_text("not a video\n" * 100)
    else:
        whole = (REPO / "assets" / "kitten.mp4").read_bytes()
        bad.write_bytes(whole[: len(whole) // 3])
    assert main(["keyframe", str(bad), "-o", str(tmp_path / "k.png")]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: {bad} could not be decoded ("), err
    assert "moov atom not found" in err[0], err  # the decoder's own reason, caught from its output


def test_a_rate_that_does_not_divide_the_source_is_said_once(tmp_path, caplog):
    clip = tmp_path / "ten.mp4"
    write_video(clip, np.zeros((12, 16, 16, 3), dtype=np.uint8), fps=10)
    with caplog.at_level(logging.WARNING, logger="ccedit.io.video"):
        for _ in range(3):  # as training reads one clip at every step
            read_video(clip, num_frames=2, fps=3)
    said = [r for r in caplog.records if "does not divide" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


def test_the_open_trident_main_branch_casts_without_the_float32_warning():
    from ccedit.models.motion import motion_unet
    from ccedit.pipelines.tiny import tiny_animatediff_components

    components = tiny_animatediff_components(appearance=False)
    diffusers_logger = logging.getLogger("diffusers")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    level = diffusers_logger.level
    diffusers_logger.addHandler(handler)
    diffusers_logger.setLevel(logging.WARNING)
    try:
        motion = motion_unet(components["unet"], components["temporal"])
    finally:
        diffusers_logger.removeHandler(handler)
        diffusers_logger.setLevel(level)
    assert not [r.getMessage() for r in records if "float32" in r.getMessage()]
    assert motion.dtype == components["unet"].dtype


def test_the_command_line_keeps_library_warnings_off_after_they_are_imported():
    # diffusers sets its log level when first imported, which is after the command line has set it.
    code = ("from ccedit.cli import main; main(['models']); import diffusers.utils.logging as l; "
            "print(l.get_verbosity())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == logging.ERROR, out.stdout


def test_the_tiny_open_trident_points_at_the_open_trident(caplog):
    from ccedit.editing import EditSession

    session = EditSession(load_edit_config(dotlist=["model.path=animatediff-tiny", "structure.annotators=[canny]"]))
    with caplog.at_level(logging.WARNING, logger="ccedit.edit_model"):
        session.pipe
    (said,) = [r.getMessage() for r in caplog.records if "tiny model" in r.getMessage()]
    assert "model.path=animatediff" in said and "converted CCEdit" not in said, said
