"""ccedit's trident reproduces the original implementation's outputs on the tiny reference fixtures."""

import subprocess
import sys

import pytest

from ccedit.parity import check_fixture
from tests.conftest import REFERENCE, REPO, load_tool, require

NETWORK_FIXTURES = ["tiny_tv2v", "tiny_tvi2v", "tiny_tv2v_b1t7", "tiny_tvi2v_b1t7"]


@pytest.mark.parametrize("name", NETWORK_FIXTURES)
def test_network_fixture_parity(name):
    result = check_fixture(require(REFERENCE / f"{name}.safetensors"))
    assert result.passed, result.details
    # every branch was compared: the structure residuals always, the appearance ones for the keyframe model
    assert any(k.startswith("controlnet_out.") for k in result.details)
    assert ("controlnet_img_out.0" in result.details) == ("tvi2v" in name)
    assert result.max_abs_err < 1e-5


def test_check_parity_tool_prints_error_and_fails_on_mismatch(tmp_path, capsys):
    fixture = require(REFERENCE / "tiny_tv2v.safetensors")
    # In this process: the script's own exit status is checked below, where it matters (a failure).
    assert load_tool("check_parity").main([str(fixture)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("max_abs_err=")
    assert float(printed.split("=")[1]) < 1e-5

    # A perturbed copy of the fixture's output must be reported as outside the tolerance.
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(fixture))
    tensors["output"] = tensors["output"] + 1e-3
    bad = tmp_path / "tiny_tv2v.safetensors"
    save_file(tensors, str(bad))
    (tmp_path / "tiny_config.json").write_bytes((REFERENCE / "tiny_config.json").read_bytes())
    fail = subprocess.run([sys.executable, str(REPO / "tools" / "check_parity.py"), str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1
    assert abs(float(fail.stdout.strip().split("=")[1]) - 1e-3) < 1e-4
