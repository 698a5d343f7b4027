"""A studio server killed in the middle of a full edit finishes it when it starts again, with the frames an
uninterrupted edit makes, and a finished edit is not redone by a later start (tiny model, 8 frames, 64x64, 2 steps).
The servers are `ccedit ui` processes on the same work folder; the edit is queued as the page's Run queues it."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ccedit.jobs import JobQueue
from ccedit.jobs.owner import LEASE_SECONDS
from ccedit.ui.studio import Studio, edit_settings
from tests.conftest import REPO, VIDEOS
from tests.jobs.conftest import ENV, frames, hanging_in_edit, wait_for_marker

pytest.importorskip("gradio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:  # a session of its own, so that killing it kills what it started
        return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def serving(server: subprocess.Popen, port: int, log: Path, seconds: float = 120) -> None:
    """Wait until the server answers on `port` (it starts its job queue first)."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"the server ended (exit {server.returncode}): {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start serving"
        time.sleep(0.5)


def ui_args(work: Path) -> list[str]:
    return ["ui", "--model", "tiny", "--work-dir", str(work), "--port", str(free_port())]


def test_a_killed_server_finishes_its_edit_when_started_again_and_never_redoes_it(tmp_path):
    work = tmp_path / "work"
    settings = edit_settings(8, 64, 64, 2, 0)
    page = Studio(work, "tiny", [VIDEOS])
    key = page.submit(page.open_clip(None, str(VIDEOS / "kitten.mp4"), settings), "a dog", None, 5)
    log = tmp_path / "servers.log"
    queue = JobQueue(work)
    # The same edit uninterrupted, alongside: the `ccedit edit` command the gallery shows for it, into another folder.
    uninterrupted = tmp_path / "uninterrupted"
    command = shlex.split(Studio(uninterrupted, "tiny").command_line(queue.get(key)))
    reference_log = tmp_path / "uninterrupted.log"
    with reference_log.open("w") as out:
        reference = subprocess.Popen([sys.executable, "-m", "ccedit", *command[1:]], cwd=REPO, env=ENV, stdout=out,
                                     stderr=subprocess.STDOUT)

    marker = tmp_path / "edit-started"
    first = start_server(hanging_in_edit(marker, 1, ui_args(work)), log)
    try:
        wait_for_marker(first, marker, log)
    finally:
        kill(first)
    # Its lease on the job runs out some LEASE_SECONDS after it claimed it, a little before now.
    lease_runs_out = time.monotonic() + LEASE_SECONDS
    killed = queue.get(key)
    assert (killed.state, killed.runs) == ("running", 1)  # as the killed server left it
    assert not (work / "outputs").exists() or not any((work / "outputs").iterdir())

    args = ui_args(work)
    second = start_server([sys.executable, "-m", "ccedit", *args], log)
    try:
        serving(second, int(args[-1]), log)
        # Sooner than that lease runs out: the job is taken back because its owner's pid is gone.
        deadline = lease_runs_out - 20
        while (job := queue.get(key)).state in ("queued", "running"):
            assert second.poll() is None, f"the server ended: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the killed server's job is still {job.state}"
            time.sleep(0.5)
    finally:
        kill(second)
    assert (job.state, job.runs) == ("done", 2), job.error
    video = Path(job.outputs["video"])

    assert reference.wait(timeout=300) == 0, reference_log.read_text()[-3000:]
    assert np.array_equal(frames(video), frames(uninterrupted / "outputs" / video.name))

    stamps = {p: p.stat().st_mtime_ns for p in (work / "outputs").iterdir()}
    args = ui_args(work)
    third = start_server([sys.executable, "-m", "ccedit", *args], log)
    try:
        serving(third, int(args[-1]), log)
        time.sleep(2)  # several turns of its queue thread
    finally:
        kill(third)
    assert {p: p.stat().st_mtime_ns for p in (work / "outputs").iterdir()} == stamps
    assert (queue.get(key).state, queue.get(key).runs) == ("done", 2)
