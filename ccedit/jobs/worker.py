"""Running queued jobs in one process: claim, edit, publish, mark done, with one loaded model per model setting.

A `Worker` keeps an `EditSession` for the model settings of the job it ran last and claims jobs needing the
same model first, so a process loads each model once. While a job runs a thread renews the owner's lease. A job
whose outputs are already published (its process died before the queue heard of it) is marked done, not run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError, first_line
from .owner import LEASE_SECONDS, Owner, this_process
from .published import job_outputs, published_sidecar
from .queue import JobQueue
from .spec import Job, model_key

logger = logging.getLogger(__name__)

# job id, step index, steps per pass: what a caller's progress display is told after every denoising step
StepListener = Callable[[str, int, int], None]


class JobCancelled(Exception):
    """The job was cancelled while it ran (raised from the denoising loop's step callback)."""


class Worker:
    """Runs jobs of `queue` as this process. `overwrite`: published outputs of a job are replaced, not kept.
    `device` replaces an `auto` device setting (a process's own GPU under `accelerate launch`). `lock` is held while
    a job uses the model (the studio shares its model between requests and the queue)."""

    def __init__(self, queue: JobQueue, *, overwrite: bool = False, device: str | None = None, lock=None):
        self.queue = queue
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.owner: Owner = this_process()
        self.overwrite = overwrite
        self.device = device
        self._session = None
        self._session_key: str | None = None

    def run_next(self, only: set[str] | None = None, on_step: StepListener | None = None) -> Job | None:
        """Claim the next job (of `only`, when given) and run it; returns it as it ended, None when none is queued."""
        job = self.queue.claim(self.owner, prefer_model=self._session_key, only=only)
        if job is None:
            return None
        try:
            with _Lease(self.queue.work, job.id, self.owner), self.lock:
                outputs = self._run(job, on_step)
        except JobCancelled:
            self.queue.fail(job.id, self.owner, "cancelled")
        except UserError as error:
            self.queue.fail(job.id, self.owner, str(error))
        except KeyboardInterrupt:
            self.queue.release(job.id, self.owner)  # not the job's fault: it runs again next time
            raise
        except Exception as error:  # noqa: BLE001 - one job's failure is recorded and the next job runs
            logger.exception("job %s failed", job.id)
            self.queue.fail(job.id, self.owner, f"{type(error).__name__}: {first_line(error)}")
        else:
            self.queue.finish(job.id, self.owner, outputs)
        return self.queue.get(job.id)

    def _run(self, job: Job, on_step: StepListener | None) -> dict:
        from ..editing import check_memory_before_decoding, write_edit_outputs

        spec = job.spec
        cfg = spec.config()
        if self.device and cfg.model.device == "auto":
            cfg.model.device = self.device
        work = self.queue.work
        if not self.overwrite:
            sidecar = published_sidecar(spec, cfg, work)
            if sidecar is not None:
                return job_outputs(sidecar)
        edit_job = spec.edit_job(work)
        output = Path(edit_job.output)
        check_memory_before_decoding(spec.input, cfg, keyframes=edit_job.keyframes)
        session = self.session(cfg)
        steps = cfg.sampling.num_inference_steps

        def step_end(pipe, step_index, timestep, tensors):
            if self.queue.cancel_requested(job.id):
                raise JobCancelled(job.id)
            if on_step is not None:
                on_step(job.id, step_index, steps)
            return {}

        result = session.edit(edit_job, callback_on_step_end=step_end)
        result.timings["model_load"] = session.load_seconds
        sidecar = write_edit_outputs(result, output, cfg, overwrite=self.overwrite)
        return job_outputs(sidecar)

    def session(self, cfg):
        """The `EditSession` for `cfg`: the loaded one when `cfg` needs the same model, else a new one."""
        from ..editing import EditSession

        key = model_key(cfg)
        if self._session_key != key:
            self._session, self._session_key = EditSession(cfg), key
        # The loaded networks follow the model settings, the same for every job of this key; the rest is the job's.
        self._session.cfg = cfg
        return self._session


class _Lease:
    """Renews the owner's lease on a job from a thread (with a connection of its own) while the job runs."""

    def __init__(self, work: Path, job_id: str, owner: Owner):
        self._args = (work, job_id, owner)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _renew(self) -> None:
        work, job_id, owner = self._args
        queue = JobQueue(work)
        try:
            while not self._stop.wait(LEASE_SECONDS / 4):
                queue.renew(job_id, owner)
        finally:
            queue.close()

    def __enter__(self) -> "_Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
