"""`ccedit batch`: six tiny jobs on one process and on two (`accelerate launch`), and a killed batch resumed."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ccedit.jobs import JobQueue
from tests.conftest import REPO
from tests.jobs.conftest import ENV, batch_command, frames, hanging_in_edit, run, six_jobs, wait_for_marker

OUTPUTS = ["dog.mp4", "fox.mp4", "ship.mp4", "tiger.mp4", "raft.mp4", "canoe.mp4"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    jobs = six_jobs(folder)
    done = run(batch_command(jobs, folder / "work"))
    return jobs, folder / "work", done.stdout


def test_six_jobs_run_once_each_and_a_rerun_redoes_none(one_process):
    jobs, work, stdout = one_process
    assert "ran 6 jobs, 0 already done" in stdout
    queue = JobQueue(work)
    assert [(job.spec.output, job.state, job.runs) for job in queue.jobs()] == [(o, "done", 1) for o in OUTPUTS]
    for job in queue.jobs():
        assert Path(job.outputs["video"]) == work / "outputs" / job.spec.output
        assert job.owner["pid"] > 0 and job.owner["host"]
    assert (work / "outputs" / "fox.keyframe5.png").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (work / "outputs").iterdir()}
    again = run(batch_command(jobs, work))
    assert "ran 0 jobs, 6 already done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (work / "outputs").iterdir()} == stamps
    assert [job.runs for job in JobQueue(work).jobs()] == [1] * 6


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")
def test_two_processes_write_the_outputs_of_one(one_process, tmp_path):
    jobs, work, _ = one_process
    two = tmp_path / "two"
    done = run(batch_command(jobs, two, processes=2))
    assert "ran 6 jobs, 0 already done" in done.stdout
    queue = JobQueue(two)
    # Each job claimed once, by one of the processes.
    assert [(job.spec.output, job.state, job.runs) for job in queue.jobs()] == [(o, "done", 1) for o in OUTPUTS]
    for name in OUTPUTS:
        assert np.array_equal(frames(two / "outputs" / name), frames(work / "outputs" / name)), name


def test_a_killed_batch_resumes_without_redoing_finished_jobs(one_process, tmp_path):
    jobs, uninterrupted, _ = one_process
    work = tmp_path / "work"
    marker = tmp_path / "third-job-started"
    command = hanging_in_edit(marker, 3, batch_command(jobs, work)[3:])  # mid-denoising of the third job
    log = tmp_path / "batch.log"
    with log.open("w") as out:
        batch = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for_marker(batch, marker, log)
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait()

    queue = JobQueue(work)
    states = {job.spec.output: job.state for job in queue.jobs()}
    killed = Path(marker.read_text()).name
    assert states[killed] == "running"  # as the killed process left it
    finished = [name for name, state in states.items() if state == "done"]
    assert len(finished) == 2
    stamps = {p: p.stat().st_mtime_ns for p in (work / "outputs").iterdir()}

    done = run(batch_command(jobs, work))
    assert "ran 4 jobs, 2 already done" in done.stdout
    after = JobQueue(work).jobs()
    assert all(job.state == "done" for job in after)
    runs = {job.spec.output: job.runs for job in after}
    assert runs[killed] == 2 and all(runs[name] == 1 for name in OUTPUTS if name != killed)
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, path  # finished jobs were not redone
    for name in OUTPUTS:
        assert np.array_equal(frames(work / "outputs" / name), frames(uninterrupted / "outputs" / name)), name
    assert not list((work / "outputs").glob(".*"))  # no staging or temporary left behind
