"""The studio's work, apart from the page: open a clip, its structure maps, keyframes (uploaded or edited from the
prompt), a preview, full edits through the work folder's job queue, and the finished ones.

One model is loaded for everything (the queue's `Worker` session) and used by one request at a time (`lock`); a
thread runs the queued full edits, so a server that was killed finishes its unfinished jobs when it starts again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import EditConfig, EditJob, KeyframeSpec, load_edit_config, window_length
from ..errors import UserError
from ..io import write_image, write_video
from ..jobs import JobQueue, JobSpec, Worker, input_hash, job_id, model_key
from ..jobs.inputs import store_input
from ..preparation import prepare_clip
from .limits import DEFAULT_MAX_UPLOAD_MB, upload_limit_bytes
from .uploads import allowed_clip, stored_clip, stored_image

logger = logging.getLogger(__name__)
PREVIEWS = "previews"
PREVIEW_MIN_SIDE = 64  # config_checks' lower bound of video.height and video.width


@dataclass
class OpenClip:
    path: Path
    frames: np.ndarray  # uint8 (T, H, W, 3) at the working size
    maps: list[np.ndarray]  # per annotator, uint8 (T, H, W, 3)
    settings: tuple[str, ...]


def edit_settings(frames: int, height: int, width: int, steps: int, seed: int) -> tuple[str, ...]:
    """The page's fields as `key=value` settings (what a job stores and `ccedit edit` takes)."""
    return (f"video.num_frames={int(frames)}", f"video.height={int(height)}", f"video.width={int(width)}",
            f"sampling.num_inference_steps={int(steps)}", f"sampling.seed={int(seed)}")


class Studio:
    def __init__(self, work: str | Path, model: str | None = None, allowed: list[str | Path] = (),
                 max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
        self.max_upload_bytes = upload_limit_bytes(max_upload_mb)  # refused before anything starts
        self.max_upload_mb = max_upload_mb
        self.work = Path(work).expanduser().resolve()
        self.model = model
        self.allowed = [Path(a).expanduser().resolve() for a in allowed]
        self.queue = JobQueue(self.work)
        self.lock = threading.Lock()  # one model, one request at a time; the others wait their turn
        self.worker = Worker(self.queue, lock=self.lock)
        self.progress: dict[str, tuple[int, int]] = {}  # job id -> (steps done, steps per pass)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_queue, daemon=True, name="ccedit-jobs")

    def start(self) -> "Studio":
        self.queue.release_dead_owners()  # a killed server's jobs run again
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run_queue(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.worker.run_next(on_step=self._on_step)
            except Exception:  # noqa: BLE001 - the queue thread keeps serving; the job's failure is recorded
                logger.exception("the job queue failed")
                job = None
            if job is None:
                self._stop.wait(0.5)

    def _on_step(self, job: str, step: int, steps: int) -> None:
        self.progress[job] = (step + 1, steps)

    def config(self, settings: tuple[str, ...]) -> EditConfig:
        return load_edit_config([], {"model": {"path": self.model}} if self.model else {}, list(settings))

    def open_clip(self, upload: str | None, path_text: str, settings: tuple[str, ...]) -> OpenClip:
        """The clip (an upload, or a path in an allowed folder) at the working size, with its structure maps."""
        if not upload and not (path_text or "").strip():  # an upload over the limit arrives as none
            raise UserError(f"give a clip: upload one (up to {self.max_upload_mb:g} MB) or type a path inside an "
                            "allowed folder")
        path = stored_clip(upload, self.work, self.max_upload_mb) if upload else allowed_clip(path_text, self.allowed)
        cfg = self.config(settings)
        with self.lock:
            prepared = prepare_clip(path, cfg)
            maps = self.worker.session(cfg).structure(prepared.frames, prepared.fit)
        return OpenClip(path, prepared.frames, [m.permute(0, 2, 3, 1).numpy() for m in maps], settings)

    def upload_keyframe(self, clip: OpenClip, upload: str) -> tuple[Path, np.ndarray]:
        return stored_image(upload, self.work, clip.frames.shape[1:3], self.max_upload_mb)

    def auto_keyframe(self, clip: OpenClip, index: int, prompt: str, seed: int, strength: float) -> tuple[Path, np.ndarray]:
        """Frame `index` edited from `prompt` (image-to-image with the model's base and structure ControlNet, as
        `--keyframe auto` does: `EditSession.edit_frame`), stored in the work folder as the keyframe for the full
        edit."""
        import torch

        index = self._frame(clip, index)
        cfg = self.config(clip.settings)
        with self.lock:
            session = self.worker.session(cfg)
            maps = [torch.from_numpy(m[index]).permute(2, 0, 1).contiguous() for m in clip.maps]
            image = session.edit_frame(clip.frames[index], maps, prompt, float(strength), int(seed))
        return self._store_image(image), image

    def preview(self, clip: OpenClip, prompt: str, keyframe: Path | None, index: int) -> Path:
        """The first window of the clip, edited at half the size (at least 64 pixels a side) and half the steps;
        returns its mp4."""
        index = self._frame(clip, index)
        cfg = self.config(clip.settings)
        window = min(clip.frames.shape[0], window_length(cfg))
        # half the size, but no side under the smallest working size ccedit accepts; the aspect ratio kept
        scale = max(0.5, PREVIEW_MIN_SIDE / min(clip.frames.shape[1:3]))
        multiple = cfg.model.size_multiple
        height, width = (max(PREVIEW_MIN_SIDE, round(side * scale / multiple) * multiple) for side in clip.frames.shape[1:3])
        settings = (*clip.settings, f"video.num_frames={window}", f"video.height={height}", f"video.width={width}",
                    f"sampling.num_inference_steps={max(1, cfg.sampling.num_inference_steps // 2)}")
        preview_cfg = self.config(settings)
        keyframes = [KeyframeSpec(str(keyframe), index)] if keyframe is not None and index < window else []
        with self.lock:
            session = self.worker.session(preview_cfg)
            result = session.edit(EditJob(str(clip.path), prompt, keyframes))
        name = hashlib.sha256(json.dumps([str(clip.path), prompt, str(keyframe), index, settings]).encode()).hexdigest()
        target = self.work / PREVIEWS / f"{name[:16]}.mp4"
        write_video(target, result.frames, result.source.clip.fps)
        return target

    def submit(self, clip: OpenClip, prompt: str, keyframe: Path | None, index: int) -> str:
        """Queue the full edit (with a side-by-side for the gallery); returns the job's id."""
        if not prompt.strip():
            raise UserError("write a prompt first")
        index = self._frame(clip, index)
        keyframes = (f"{keyframe}@{index}",) if keyframe is not None else ()
        settings = (*clip.settings, "output.side_by_side=true")
        draft = JobSpec(str(clip.path), prompt.strip(), "", keyframes, settings, self.model)
        name = f"studio-{job_id(draft, input_hash(draft))[:12]}.mp4"
        spec = JobSpec(str(clip.path), prompt.strip(), name, keyframes, settings, self.model)
        key = job_id(spec, input_hash(spec))
        self.queue.submit(key, spec, input_hash(spec), model_key(spec.config()))
        if self.queue.get(key).state == "failed":
            self.queue.requeue([key])
        return key

    def cancel(self, key: str) -> None:
        self.queue.request_cancel(key)

    def wait(self, key: str, report=None, poll: float = 0.2):
        """Wait for a queued job to end, telling `report(fraction, text)` how far it is; returns the job."""
        while (job := self.queue.get(key)).state in ("queued", "running"):
            if report is not None:
                done, steps = self.progress.get(key, (0, 1))
                report(min(done / steps, 1.0), f"{job.state}: step {done} of {steps}")
            time.sleep(poll)
        return job

    def finished(self) -> list:
        return [job for job in self.queue.jobs("done")]

    def command_line(self, job) -> str:
        """The `ccedit edit` command that makes the same edit."""
        spec = job.spec
        words = ["ccedit", "edit", spec.input, "--prompt", spec.prompt]
        for keyframe in spec.keyframes:
            words += ["--keyframe", keyframe]
        # settings rather than their flags: the command line's flags are cli.py's to name
        if spec.model:
            words.append(f"model.path={spec.model}")
        words += ["-o", str(spec.output_path(self.work)), "output.side_by_side=true",
                  *[s for s in spec.settings if s != "output.side_by_side=true"]]
        return " ".join(shlex.quote(w) for w in words)

    def _frame(self, clip: OpenClip, index) -> int:
        count = clip.frames.shape[0]
        if index is None or not -count <= int(index) < count:
            raise UserError(f"pick a frame from 0 to {count - 1}")
        return int(index) % count

    def _store_image(self, image: np.ndarray) -> Path:
        with tempfile.TemporaryDirectory(dir=self.work) as folder:
            path = Path(folder) / "keyframe.png"
            write_image(path, image)
            return store_input(self.work, path, ".png")

