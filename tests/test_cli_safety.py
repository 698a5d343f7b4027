"""The command line under damaged caches and bad input: the result of a clean run, or one error line and exit 2."""

from __future__ import annotations

import pytest

from ccedit.cli import main
from ccedit.io import read_video
from tests.conftest import VIDEOS, require

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1"]


@pytest.fixture
def kitten():
    return str(require(VIDEOS / "kitten.mp4"))


def one_error_line(capsys) -> str:
    """The single `error:` line on stderr, with no traceback."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_an_edit_over_a_damaged_cache_equals_a_cold_run(tmp_path, kitten):
    cold, warm = tmp_path / "cold.mp4", tmp_path / "warm.mp4"
    args = ["edit", kitten, "--prompt", "a cat", *FAST, f"structure.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "-o", str(cold)]) == 0
    (entry,) = (tmp_path / "cache").rglob("*.safetensors")
    data = bytearray(entry.read_bytes())
    data[-64:] = b"\xff" * 64  # float16 0xffff is NaN
    entry.write_bytes(bytes(data))
    assert main([*args, "-o", str(warm)]) == 0
    assert (read_video(warm).frames == read_video(cold).frames).all()
