"""`ccedit models`: which model an edit would use and where each of its parts comes from, without loading any.

For each part: a built-in random stand-in, a local folder (and whether it holds what the part needs), or a hub id
(with the commit of its cached snapshot, or the command that fetches it once, after which ccedit runs offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import EditConfig
from .kinds.base import ModelRef
from .kinds.registry import builtin_models, folder_kind, kind_for, named_models


@dataclass(frozen=True)
class PartRow:
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


def model_parts(cfg: EditConfig) -> list[PartRow]:
    """The parts of the model `cfg` names, in trident roles (its kind says which), then the user's ControlNets,
    base and LoRAs."""
    m = cfg.model
    parts = []
    for part in kind_for(m.path).parts(ModelRef.of(m)):
        if part.built_in:
            parts.append(PartRow(part.role, str(part.reference), f"built in: {part.built_in}, offline"))
        elif part.reference is None:
            parts.append(PartRow(part.role, "None", "not configured"))
        else:
            shown = f"{part.reference}/{part.needs}" if part.needs else part.reference
            parts.append(PartRow(part.role, shown, where(part.reference, part.needs, part.make)))
    for i, reference in enumerate(c for c in cfg.structure.controlnets if c):
        parts.append(PartRow(f"structure branch: extra ControlNet {i + 1}", reference, where(reference)))
    if m.base:
        parts.append(PartRow("personalised base (replaces the frozen UNet)", m.base, where(m.base)))
    for lora in m.lora:
        path = lora["path"] if isinstance(lora, dict) else str(lora)
        scale = lora.get("scale", 1.0) if isinstance(lora, dict) else 1.0
        parts.append(PartRow(f"LoRA (scale {scale:g})", path, where(path)))
    return parts


def format_parts(cfg: EditConfig) -> str:
    rows = model_parts(cfg)
    width = max(len(p.role) for p in rows)
    named = [name for name in named_models() if name not in builtin_models()]
    lines = [f"model: {cfg.model.path}  (built-in models: {', '.join(builtin_models())}; named: {', '.join(named)}; "
             f"anything else is {folder_kind().description})",
             f"  kind: {kind_for(cfg.model.path).description}"]
    lines += [f"  {p.role:<{width}}  {p.reference}  [{p.where}]" for p in rows]
    return "\n".join(lines)
