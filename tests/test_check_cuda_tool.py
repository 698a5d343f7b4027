"""tools/check_cuda.py, the one script a session with a GPU runs first, works end to end (on the CPU here)."""

import json

import pytest
import torch

from tests.conftest import load_tool


@pytest.mark.slow  # about a minute, most of it compiling with inductor
def test_every_check_runs_and_passes_on_the_cpu(tmp_path):
    tool = load_tool("check_cuda")
    out = tmp_path / "checks.json"
    torch._dynamo.reset()
    try:
        failed = tool.main(["--device", "cpu", "--geometry", "tiny", "--dtype", "bfloat16", "--height", "32",
                            "--width", "32", "--frames", "4", "--steps", "1", "--json", str(out)])
    finally:
        torch._dynamo.reset()
    report = json.loads(out.read_text())
    checks = {name: r for name, r in report.items() if name != "config"}
    assert set(checks) == {"bfloat16", "memory model", "channels last", "cpu offload", "compile", "wan-vace bfloat16",
                           "wan-vace cpu offload"}
    assert failed == 0, {name: r for name, r in checks.items() if not r["ok"]}
    # bfloat16 frames differ from float32 ones; the compile check judges against that difference
    assert checks["compile"]["eager_mean_difference_to_float32"] > 0
