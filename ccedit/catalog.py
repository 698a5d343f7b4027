"""`ccedit models`: which model an edit would use and where each of its parts comes from, without loading any.

For each part: a built-in random stand-in, a local folder (and whether it holds what the part needs), or a hub id
(with the commit of its cached snapshot, or the command that fetches it once, after which ccedit runs offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import BUILTIN_MODELS, EditConfig


@dataclass(frozen=True)
class Part:
    role: str  # what the part does in the trident
    reference: str  # as configured
    where: str  # where it comes from now


def where(reference: str, needs: str = "", make: str = "") -> str:
    """Where a folder or hub id `reference` comes from on this machine; `make` is the command that makes a missing
    folder of that name (a converted CCEdit model), said beside the download when the name could be either."""
    from .hub import names_local_folder

    folder = Path(reference).expanduser()
    if folder.is_dir():
        missing = needs and not (folder / needs).exists()
        return f"local folder{f' (missing {needs})' if missing else ''}"
    if folder.suffix in (".safetensors", ".ckpt"):
        return "local file" if folder.is_file() else "file not found"
    if names_local_folder(reference) or reference.count("/") != 1:
        return f"folder not found{f': make it with `{make}`' if make else ''}"
    from huggingface_hub import scan_cache_dir

    try:
        cached = {repo.repo_id: repo for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet
        cached = {}
    if reference in cached:
        return f"hub id, cached ({cached[reference].size_on_disk_str})"
    if make:
        return f"no folder here, and not a downloaded hub id: make it with `{make}`, or run `hf download {reference}`"
    return f"hub id, not downloaded: run `hf download {reference}` once while online"


def model_parts(cfg: EditConfig) -> list[Part]:
    """The parts of the model `cfg` names, in trident roles, then the user's base and LoRAs."""
    m = cfg.model
    parts: list[Part] = []
    if m.path in BUILTIN_MODELS:
        kind = "CCEdit trident" if m.path == "tiny" else "open trident (AnimateDiff + ControlNet + SparseCtrl)"
        parts.append(Part("model", m.path, f"built in: a tiny random {kind}, offline"))
    elif m.path == "animatediff":
        roles = {"base": "main branch: SD-1.5 base", "motion_adapter": "main branch: AnimateDiff motion modules",
                 "controlnet": "structure branch: ControlNet", "sparsectrl": "appearance branch: SparseCtrl-RGB"}
        for key, role in roles.items():
            reference = m.parts.get(key)
            parts.append(Part(role, str(reference), where(str(reference)) if reference else "not configured"))
    else:
        for sub, role in (("unet", "main branch: SD-1.5 base"), ("temporal", "main branch: CCEdit temporal layers"),
                          ("controlnet", "structure branch: ControlNet"), ("appearance", "appearance branch: keyframe encoder"),
                          ("depth_estimator", "structure maps: depth estimator")):
            parts.append(Part(role, f"{m.path}/{sub}", where(m.path, sub, f"ccedit convert CKPT --out {m.path}")))
    for i, reference in enumerate(c for c in cfg.structure.controlnets if c):
        parts.append(Part(f"structure branch: extra ControlNet {i + 1}", reference, where(reference)))
    if m.base:
        parts.append(Part("personalised base (replaces the frozen UNet)", m.base, where(m.base)))
    for lora in m.lora:
        path = lora["path"] if isinstance(lora, dict) else str(lora)
        scale = lora.get("scale", 1.0) if isinstance(lora, dict) else 1.0
        parts.append(Part(f"LoRA (scale {scale:g})", path, where(path)))
    return parts


def format_parts(cfg: EditConfig) -> str:
    rows = model_parts(cfg)
    width = max(len(p.role) for p in rows)
    lines = [f"model: {cfg.model.path}  (built-in models: {', '.join(BUILTIN_MODELS)}; named: animatediff; "
             "anything else is a converted CCEdit folder or hub id)"]
    lines += [f"  {p.role:<{width}}  {p.reference}  [{p.where}]" for p in rows]
    return "\n".join(lines)
