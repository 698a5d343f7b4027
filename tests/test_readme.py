"""The README's Python example runs as written."""

import re

import numpy as np

from tests.conftest import REPO


def test_readme_python_example_runs(monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = namespace["out"]
    assert out.frames.shape == (1, 16, 128, 128, 3) and out.frames.dtype == np.uint8
    assert out.windows == [3]  # 16 frames in 8-frame windows sharing at least 2: 0-7, 6-13, 8-15
    assert out.timings["denoise"] > 0
