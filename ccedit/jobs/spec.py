"""What one queued edit is: `JobSpec` (clip, prompt, keyframes, settings, output name), its identity and its
settings.

A job's id is the hash of its spec and of its input files' contents, so the same edit submitted twice is one job,
and an input replaced in place makes a new one. Outputs are names under the work folder's `outputs/`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import EditConfig, EditJob, KeyframeSpec, load_edit_config
from ..io.fingerprint import file_fingerprint

OUTPUTS = "outputs"
# The settings that decide which networks a session loads: jobs that agree on them share one loaded model.
MODEL_SECTIONS = ("model", "structure")


@dataclass(frozen=True)
class JobSpec:
    """One edit as the queue stores it. `input` and keyframe images are absolute paths; `keyframes` are written as
    `ccedit edit --keyframe` takes them (`IMAGE@K`, `auto@K`); `settings` are `key=value` overrides on top of the
    work's model; `output` is a file name under `WORK/outputs/`."""

    input: str
    prompt: str
    output: str
    keyframes: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    model: str | None = None  # `--model` of the batch or the studio; a `model.path=` setting wins over it

    def to_dict(self) -> dict:
        return {**asdict(self), "keyframes": list(self.keyframes), "settings": list(self.settings)}

    @classmethod
    def from_dict(cls, data: dict) -> "JobSpec":
        return cls(**{**data, "keyframes": tuple(data["keyframes"]), "settings": tuple(data["settings"])})

    def keyframe_specs(self) -> list[KeyframeSpec]:
        return [KeyframeSpec.parse(text) for text in self.keyframes]

    def input_files(self) -> list[Path]:
        """The files whose contents the job reads: the clip and the keyframe images."""
        return [Path(self.input), *(Path(k.source) for k in self.keyframe_specs() if not k.is_auto)]

    def config(self) -> EditConfig:
        """The edit's settings: the shipped defaults, the model, then the job's own `key=value` settings."""
        flags = {"model": {"path": self.model}} if self.model else {}
        return load_edit_config([], flags, list(self.settings))

    def output_path(self, work: Path) -> Path:
        return Path(work) / OUTPUTS / self.output

    def edit_job(self, work: Path) -> EditJob:
        return EditJob(input=self.input, prompt=self.prompt, keyframes=self.keyframe_specs(),
                       output=str(self.output_path(work)))


def input_hash(spec: JobSpec) -> str:
    """SHA-256 over the contents of the job's input files (a frame folder: its frames), in order."""
    digest = hashlib.sha256()
    for path in spec.input_files():
        digest.update((file_fingerprint(path) or "missing").encode())
    return digest.hexdigest()


def job_id(spec: JobSpec, inputs_hash: str) -> str:
    """The job's identity: its spec and the contents of its inputs (16 hex digits)."""
    text = json.dumps({"spec": spec.to_dict(), "inputs": inputs_hash}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_key(cfg: EditConfig) -> str:
    """Which loaded model a job needs: its model and structure settings and its scheduler (set when the pipeline
    loads), less the structure cache, which only decides where maps are kept, and the device."""
    data = cfg.to_dict()
    chosen = {section: data[section] for section in MODEL_SECTIONS}
    chosen["structure"] = {k: v for k, v in chosen["structure"].items() if k not in ("cache_dir", "cache_max_gb")}
    chosen["model"] = {k: v for k, v in chosen["model"].items() if k != "device"}  # each process may have its own
    chosen["scheduler"] = data["sampling"]["scheduler"]
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Job:
    """A job as the queue holds it: its spec, identity, state and who runs or ran it."""

    id: str
    spec: JobSpec
    input_hash: str
    model_key: str
    state: str  # queued, running, done or failed
    error: str | None = None
    owner: dict | None = None  # host, pid, started (the owning process's start time)
    outputs: dict = field(default_factory=dict)
    runs: int = 0  # how many times a process claimed it
    cancel: bool = False
