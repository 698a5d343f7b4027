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
    import ccedit.kinds as kinds
    from ccedit.pipelines import model_folders

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before a cheap check")

    monkeypatch.setattr(kinds, "load_pipeline", must_not_load)
    monkeypatch.setattr(model_folders, "resolve_model_folder", must_not_load)
    monkeypatch.setattr(ccedit.annotators, "build_annotator", must_not_load)
    monkeypatch.setattr(ccedit.annotators.registry, "build_annotator", must_not_load)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--height", "0"], "must be from 64 to 8192 pixels"),
        (["--fps", "0"], "--fps"),
        (["--start", "100"], "past the end"),
        (["sampling.scheduler=eulr"], "unknown scheduler 'eulr'"),
        (["--structure", "cany"], "unknown annotator 'cany'"),
        (["structure.annotators=[canny,depth]"], "2 ControlNets but the model has one"),
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


HEAVY = ("torch", "diffusers", "transformers")
CHEAP_REFUSALS = [
    (["edit", "{kitten}", "--prompt", "x", "-o", "/nonexistent/dir/x.txt"], "must end in .mp4"),
    (["edit", "{kitten}", "--prompt", "x", "-o", "{tmp}/a_file/x.mp4"], "is a file"),
    (["edit", "{tmp}/missing.mp4", "--prompt", "x", "-o", "{tmp}/x.mp4"], "does not exist"),
    (["edit", "{kitten}", "--prompt", "x", "-o", "{tmp}/x.mp4", "--keyframe", "{tmp}/no.png"], "does not exist"),
    (["edit", "{kitten}", "--prompt", "x", "-o", "{tmp}/x.mp4", "sampling.scheduler=eulr"], "unknown scheduler"),
    (["edit", "{kitten}", "--prompt", "x", "-o", "{tmp}/x.mp4", "--structure", "cany"], "unknown annotator"),
    (["edit", "{kitten}", "--prompt", "x", "-o", "{tmp}/x.mp4", "--window", "4", "--overlap", "4"], "overlap"),
    (["keyframe", "{kitten}", "-o", "{tmp}/a_file/k.png"], "is a file"),
    (["keyframe", "{kitten}", "-o", "{tmp}/k.txt"], "must be an image"),
]
# Every command line of CHEAP_REFUSALS in one fresh process, one after another: each one's exit status, what it wrote
# to stderr, and the heavy libraries imported so far (none may be, after any of them).
_REFUSE_ALL = f"""
import io, json, logging, sys
from ccedit.cli import main

results = []
for args in json.loads(sys.argv[1]):
    sys.stderr = io.StringIO()
    logging.root.handlers.clear()  # the command line sets up logging to the stderr of its own call
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    results.append([code, sys.stderr.getvalue(), [m for m in {HEAVY!r} if m in sys.modules]])
sys.stderr = sys.__stderr__
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cheap_refusals(tmp_path_factory) -> list:
    """(exit status, stderr, heavy libraries imported) for each of CHEAP_REFUSALS, run in one fresh process."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    tmp = tmp_path_factory.mktemp("cheap")
    (tmp / "a_file").write_text("a file where a folder would go")
    kitten = REPO / "assets" / "kitten.mp4"
    commands = [[a.format(kitten=kitten, tmp=tmp) for a in command] for command, _ in CHEAP_REFUSALS]
    done = subprocess.run([sys.executable, "-c", _REFUSE_ALL, json.dumps(commands)], capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CHEAP_REFUSALS)), ids=[e for _, e in CHEAP_REFUSALS])
def test_cheap_checks_refuse_before_torch_is_imported(cheap_refusals, case):
    code, stderr, heavy = cheap_refusals[case]
    expected = CHEAP_REFUSALS[case][1]
    assert code == 2, stderr
    err = [line for line in stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert heavy == [], heavy  # no heavy library was imported
