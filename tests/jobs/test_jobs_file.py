"""A jobs file's bad row is refused in one line naming the row and the field, before any model loads, and nothing
is written."""

from __future__ import annotations

import pytest

from tests.conftest import KEYFRAME, VIDEOS
from tests.jobs.conftest import TINY, batch_command, run, write_csv

GOOD = {"clip": str(VIDEOS / "kitten.mp4"), "prompt": "a dog", "keyframes": "", "output": "dog.mp4", "settings": TINY}


@pytest.mark.parametrize("bad, message", [
    ({"clip": "missing.mp4"}, "row 2, clip: "),
    ({"prompt": ""}, "row 2, prompt: missing"),
    ({"keyframes": "nowhere.png@3"}, "row 2, keyframes: keyframe image"),
    ({"keyframes": f"{KEYFRAME};{KEYFRAME}"}, "row 2, keyframes: several keyframes need their frames"),
    ({"output": "../escape.mp4"}, "row 2, output: '../escape.mp4' must be a file name"),
    ({"output": "dog.mp4"}, "row 2, output: dog.mp4 is also row 1's output"),
    ({"settings": "sampling.steps=3"}, "row 2, settings: invalid setting"),
    ({"settings": "frames"}, "row 2, settings: 'frames' is not KEY=VALUE"),
    ({"settings": "sampling.num_inference_steps=0"}, "row 2, settings: "),
])
def test_a_bad_row_is_one_line_naming_row_and_field_and_nothing_is_written(tmp_path, bad, message):
    jobs = write_csv(tmp_path / "jobs.csv", [GOOD, {**GOOD, "output": "other.mp4", **bad}])
    done = run(batch_command(jobs, tmp_path / "work"), expect=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {jobs} ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "work").exists()


def test_yaml_jobs_and_an_output_taken_by_another_edit(tmp_path):
    from ccedit.jobs.jobs_file import read_jobs_file

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"- clip: {VIDEOS / 'kitten.mp4'}\n  prompt: a dog\n  output: dog.mp4\n"
                    f"  keyframes: [auto@5]\n  settings: [sampling.seed=4, 'sampling.add_prompt=a b']\n")
    [spec] = read_jobs_file(jobs, model="tiny")
    assert spec.keyframes == ("auto@5",) and spec.settings == ("sampling.seed=4", "sampling.add_prompt=a b")
    assert spec.config().sampling.add_prompt == "a b" and spec.model == "tiny"
    # An output that another edit wrote is kept: refused before any model loads, unless --overwrite.
    (tmp_path / "work" / "outputs").mkdir(parents=True)
    (tmp_path / "work" / "outputs" / "dog.mp4").write_bytes(b"someone else's")
    done = run(batch_command(jobs, tmp_path / "work"), expect=2)
    assert f"{jobs} row 1, output: " in done.stderr and "--overwrite" in done.stderr
    assert (tmp_path / "work" / "outputs" / "dog.mp4").read_bytes() == b"someone else's"
    assert not (tmp_path / "work" / "jobs.sqlite").exists()
