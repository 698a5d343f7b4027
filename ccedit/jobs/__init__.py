"""The job queue of a work folder and what runs on it: `ccedit batch` and the studio's full edits.

`spec.py` what a job is and its identity, `owner.py` who runs it and whether that process is gone, `queue.py` the
SQLite queue (`WORK/jobs.sqlite`), `published.py` whether a job's outputs are already published, `worker.py`
claiming and running jobs on one loaded model, `jobs_file.py` a batch's YAML or CSV file, `batch.py` the batch
over one or several processes, `inputs.py` inputs copied into the work folder under their content's name.
"""

from .batch import BatchRun, run_batch
from .queue import JobQueue
from .spec import Job, JobSpec, input_hash, job_id, model_key
from .worker import JobCancelled, Worker

__all__ = ["BatchRun", "Job", "JobCancelled", "JobQueue", "JobSpec", "Worker", "input_hash", "job_id", "model_key",
           "run_batch"]
