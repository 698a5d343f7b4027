"""Whether a job's outputs are already published: its sidecar is there and describes this job.

A sidecar appears last, after every output of its set (io/publish.py), so a sidecar that names the job's input,
prompt, keyframes and settings means the job finished, even when its process died before the queue heard of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import EditConfig
from ..outputs import edit_output_paths
from .spec import JobSpec

# Where the edit ran is not part of what it made: each process of a batch may use its own device.
_PLACE_KEYS = (("model", "device"),)


def published_sidecar(spec: JobSpec, cfg: EditConfig, work: Path) -> dict | None:
    """The sidecar of the job's published outputs, or None when none matches the job."""
    output = spec.output_path(work)
    try:
        sidecar = json.loads(edit_output_paths(output)["sidecar"].read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict):
        return None
    wanted = {"output": str(output), "input": spec.input, "prompt": spec.prompt,
              "keyframes": _keyframes(spec), "config": _comparable(cfg.to_dict())}
    found = {"output": sidecar.get("output"), "input": sidecar.get("input"), "prompt": sidecar.get("prompt"),
             "keyframes": _recorded_keyframes(sidecar.get("keyframes")),
             "config": _comparable(sidecar.get("config") or {})}
    return sidecar if found == wanted else None


def job_outputs(sidecar: dict) -> dict:
    """The published files of a job, by kind, from its sidecar: the video, the sidecar and the extras."""
    video = Path(sidecar["output"])
    return {"video": str(video), "sidecar": str(edit_output_paths(video)["sidecar"]), **sidecar.get("outputs", {})}


def _keyframes(spec: JobSpec) -> list:
    return [["auto"] if k.is_auto else [k.source] for k in spec.keyframe_specs()]


def _recorded_keyframes(records) -> list:
    if not isinstance(records, list):
        return []
    return [["auto"] if r.get("auto") else [r.get("path")] for r in records if isinstance(r, dict)]


def _comparable(config: dict) -> dict:
    """The settings as JSON would give them back, less where the edit ran."""
    data = json.loads(json.dumps(config, default=str))
    for section, key in _PLACE_KEYS:
        data.get(section, {}).pop(key, None)
    return data
