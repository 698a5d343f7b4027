"""The queue: one job per spec and inputs, atomic claims across processes, owners that are gone, and jobs whose
outputs are published."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time

from ccedit.jobs import JobQueue, JobSpec, Worker, input_hash, job_id, model_key
from ccedit.jobs.owner import Owner, this_process
from tests.conftest import VIDEOS

TINY = ("video.num_frames=8", "video.height=64", "video.width=64", "sampling.num_inference_steps=2")


def spec(output: str = "a.mp4", prompt: str = "a dog", settings: tuple[str, ...] = TINY) -> JobSpec:
    return JobSpec(input=str(VIDEOS / "kitten.mp4"), prompt=prompt, output=output, settings=settings)


def submit(queue: JobQueue, job: JobSpec) -> str:
    inputs = input_hash(job)
    key = job_id(job, inputs)
    queue.submit(key, job, inputs, model_key(job.config()))
    return key


def test_the_same_job_twice_is_one_job_and_another_input_content_is_another(tmp_path):
    queue = JobQueue(tmp_path)
    first = submit(queue, spec())
    assert submit(queue, spec()) == first and len(queue.jobs()) == 1
    copy = tmp_path / "kitten.mp4"
    copy.write_bytes((VIDEOS / "kitten.mp4").read_bytes())
    moved = JobSpec(input=str(copy), prompt="a dog", output="a.mp4", settings=TINY)
    before = input_hash(moved)
    copy.write_bytes((VIDEOS / "sailboat.mp4").read_bytes())  # replaced in place: another job
    assert input_hash(moved) != before


def _claim_all(work: str, found) -> None:
    queue = JobQueue(work)
    owner = this_process()
    while (job := queue.claim(owner)) is not None:
        found.put(job.id)
        queue.finish(job.id, owner, {})


def test_processes_claiming_at_once_take_each_job_once(tmp_path):
    queue = JobQueue(tmp_path)
    ids = [submit(queue, spec(f"{i}.mp4", f"prompt {i}")) for i in range(40)]
    context = multiprocessing.get_context("spawn")
    found = context.Queue()
    workers = [context.Process(target=_claim_all, args=(str(tmp_path), found)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    claimed = [found.get(timeout=10) for _ in ids]
    assert sorted(claimed) == sorted(ids) and found.empty()
    assert [job.runs for job in queue.jobs()] == [1] * 40


def test_a_job_of_a_dead_process_or_an_expired_lease_goes_back_to_queued(tmp_path):
    queue = JobQueue(tmp_path)
    dead_id, lapsed_id, alive_id = (submit(queue, spec(f"{n}.mp4", n)) for n in ("dead", "lapsed", "alive"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Owner(this_process().host, gone.pid, time.time())
    reused = Owner(this_process().host, this_process().pid, this_process().started - 100)  # the pid, not the process
    me = this_process()
    for key, owner in ((dead_id, dead), (lapsed_id, me), (alive_id, me)):
        queue._db.execute("UPDATE jobs SET state = 'running', owner = ?, lease_until = ? WHERE id = ?",
                          (json.dumps(owner.to_dict()), time.time() + 60, key))
    queue._db.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (time.time() - 1, lapsed_id))
    assert sorted(queue.release_dead_owners()) == sorted([dead_id, lapsed_id])
    assert queue.get(alive_id).state == "running"
    queue._db.execute("UPDATE jobs SET owner = ? WHERE id = ?", (json.dumps(reused.to_dict()), alive_id))
    assert queue.release_dead_owners() == [alive_id]
    # A stale owner cannot mark the job it lost.
    queue.fail(dead_id, dead, "late")
    assert queue.get(dead_id).state == "queued"


def test_a_job_whose_outputs_are_published_is_done_and_never_run_again(tmp_path, monkeypatch):
    import ccedit.editing as editing

    queue = JobQueue(tmp_path)
    key = submit(queue, spec())
    worker = Worker(queue)
    assert worker.run_next().state == "done"
    video = tmp_path / "outputs" / "a.mp4"
    stamp = video.stat().st_mtime_ns
    # As if the process had died after publishing, before the queue heard of it.
    queue._db.execute("UPDATE jobs SET state = 'queued', outputs = '{}' WHERE id = ?", (key,))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a published job ran again")

    monkeypatch.setattr(editing.EditSession, "edit", must_not_run)
    job = Worker(queue).run_next()
    assert job.state == "done" and job.outputs["video"] == str(video) and video.stat().st_mtime_ns == stamp


def test_one_session_per_model_setting_and_cancelling(tmp_path, monkeypatch):
    import ccedit.editing as editing

    queue = JobQueue(tmp_path)
    ids = [submit(queue, spec("a.mp4")), submit(queue, spec("b.mp4", settings=(*TINY, "sampling.scheduler=ddim"))),
           submit(queue, spec("c.mp4", "a cat"))]
    built = []
    init = editing.EditSession.__init__
    monkeypatch.setattr(editing.EditSession, "__init__", lambda self, cfg: built.append(cfg) or init(self, cfg))
    worker = Worker(queue)
    order = [worker.run_next().spec.output for _ in ids]
    assert order == ["a.mp4", "c.mp4", "b.mp4"] and len(built) == 2  # jobs of the loaded model first
    cancelled = submit(queue, spec("d.mp4", "a bird"))
    steps = []

    def cancel_after_first_step(job, step, total):
        steps.append((job, step, total))
        queue.request_cancel(cancelled)

    job = worker.run_next(on_step=cancel_after_first_step)
    assert job.state == "failed" and job.error == "cancelled" and steps == [(cancelled, 0, 2)]
    assert not (tmp_path / "outputs" / "d.mp4").exists()
