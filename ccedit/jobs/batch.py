"""`ccedit batch JOBS`: every job of a jobs file through the work folder's queue, on one process or several.

Every process reads and checks the whole file first (the same refusal everywhere, before any model loads); the
main process then submits the jobs, and after a barrier every process claims jobs until none is queued, so the
split is dynamic and each job runs once. A rerun finds the finished jobs done and runs the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .jobs_file import RowError, read_jobs_file
from .published import published_sidecar
from .queue import JobQueue
from .spec import input_hash, job_id, model_key
from .worker import Worker


@dataclass
class BatchRun:
    is_main: bool
    done_now: int  # jobs this run finished (every process)
    already_done: int
    failed: list[tuple[str, str]]  # (output, error) of the jobs that failed
    seconds: float


def run_batch(jobs_file: str | Path, work: str | Path, *, model: str | None = None, overwrite: bool = False,
              progress: bool = True) -> BatchRun:
    """Run (or resume) the jobs of `jobs_file` in the work folder `work`."""
    import torch
    from accelerate import PartialState

    started = time.perf_counter()
    work = Path(work).expanduser().resolve()
    specs = read_jobs_file(jobs_file, model)
    _check_destinations(Path(jobs_file), specs, work, overwrite)
    # As in training and evaluation: on a machine without CUDA the processes `accelerate launch` starts join over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    keys = [(spec, input_hash(spec)) for spec in specs]
    ids = [job_id(spec, inputs) for spec, inputs in keys]
    already = 0
    if state.is_main_process:
        queue = JobQueue(work)
        for (spec, inputs), key in zip(keys, ids):
            queue.submit(key, spec, inputs, model_key(spec.config()))
        jobs = {job.id: job for job in queue.jobs() if job.id in set(ids)}
        # A rerun retries failed jobs; --overwrite runs finished ones again and replaces their outputs.
        again = [key for key in ids if jobs[key].state == "failed" or (overwrite and jobs[key].state == "done")]
        queue.requeue(again)
        already = sum(jobs[key].state == "done" for key in ids if key not in again)
    state.wait_for_everyone()
    queue = JobQueue(work)
    device = str(state.device) if torch.cuda.is_available() and state.num_processes > 1 else None
    worker = Worker(queue, overwrite=overwrite, device=device)
    _work_through(worker, set(ids), progress, state.process_index)
    state.wait_for_everyone()
    jobs = {job.id: job for job in queue.jobs()}
    failed = [(jobs[key].spec.output, jobs[key].error) for key in ids if jobs[key].state == "failed"]
    done_now = sum(jobs[key].state == "done" for key in ids) - already
    return BatchRun(state.is_main_process, done_now, already, failed, time.perf_counter() - started)


def _check_destinations(source: Path, specs, work: Path, overwrite: bool) -> None:
    """Each job's output must be free (or, with --overwrite, replaceable) unless the job itself published it."""
    from ..edit_checks import check_edit_request

    for number, spec in enumerate(specs, 1):
        cfg = spec.config()
        if not overwrite and published_sidecar(spec, cfg, work) is not None:
            continue  # finished before: resumed, not redone
        try:
            check_edit_request(spec.input, spec.output_path(work), cfg, overwrite=overwrite,
                               keyframes=spec.keyframe_specs())
        except UserError as error:
            raise RowError(source, number, "output", str(error)) from None


def _work_through(worker: Worker, ids: set[str], progress: bool, rank: int) -> None:
    from tqdm import tqdm

    bar = tqdm(desc=f"process {rank}: jobs", unit="job", disable=not progress, position=rank)
    with bar:
        while (job := worker.run_next(only=ids)) is not None:
            bar.set_postfix_str(f"{job.spec.output}: {job.state}")
            bar.update()
