"""`ccedit eval` with a model that is not there: one line before the first edit, wherever the model is named (a
metric's or a method's), whether the hub is switched off or does not answer; rows that fail give exit status 1."""

import pytest
from huggingface_hub import constants

import ccedit.hub
from ccedit.cli import main
from ccedit.methods.folder import ResultsFolderMethod


@pytest.fixture
def method_runs(monkeypatch) -> list[str]:
    """Every edit any method makes (the results-folder method counts; a ccedit method's edit is its session's)."""
    ran = []
    monkeypatch.setattr(ResultsFolderMethod, "run", lambda self, job, fields: ran.append(job.input))
    from ccedit.editing import EditSession

    monkeypatch.setattr(EditSession, "edit", lambda self, job: ran.append(job.input))
    return ran


@pytest.fixture(params=["HF_HUB_OFFLINE set", "hub does not answer"])
def no_hub(request, monkeypatch) -> str:
    if request.param == "hub does not answer":  # no HF_HUB_OFFLINE: the probe's answer is what decides
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setitem(ccedit.hub._hub_answers, constants.ENDPOINT, False)
        return "the hub does not answer"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return "HF_HUB_OFFLINE is set"


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_a_metric_model_that_cannot_be_had_stops_the_run_before_any_edit(generated_eval, method_runs, no_hub,
                                                                        capsys):
    metrics = {"clip_text": {"model": "nobody-here/no-such-clip"}}
    assert main(["eval", generated_eval.config(metrics=metrics), "--no-progress"]) == 2
    (line,) = error_lines(capsys)
    assert "metric 'clip_text'" in line and "nobody-here/no-such-clip" in line and no_hub in line
    assert method_runs == []


def test_a_method_model_that_cannot_be_had_stops_the_run_before_any_edit(generated_eval, method_runs, no_hub,
                                                                        capsys):
    methods = [{"name": "source", "type": "folder", "options": {"root": str(generated_eval.videos),
                                                                 "pattern": "{video}"}},
               {"name": "ours", "type": "ccedit", "options": {"overrides": ["model.path=nobody-here/no-such-model"]}}]
    video = {"num_frames": 2, "height": 64, "width": 64}  # the smallest size ccedit edits
    assert main(["eval", generated_eval.config(methods=methods, video=video), "--no-progress"]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("error: method 'ours': ") and "nobody-here/no-such-model" in line
    assert method_runs == []


def test_failed_rows_give_exit_status_1_and_the_help_says_so(generated_eval, capsys):
    methods = [{"name": "elsewhere", "type": "folder", "options": {"root": str(generated_eval.videos),
                                                                    "pattern": "{video}-not-made"}}]
    assert main(["eval", generated_eval.config(methods=methods), "--no-progress"]) == 1
    assert "3 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "1 when some failed" in " ".join(capsys.readouterr().out.split())
