"""`output.conditions=true` (`--dump-conditions`): what each network of an edit received, as files beside it.

The folder `OUT.conditions/` holds:
- `conditions.json`: the scales, the prior, SDEdit's strength and first timestep, and per pass and window the clip
  frame at each window position, the cross-frame anchor, the keyframes acting there (clip frame and window
  position) and each structure map's range as the ControlNet took it (`min`, `max`, `levels`: distinct values);
- `structure/NAME/passP-windowW/POS-frameK.png`: each ControlNet's map at each window position, as it took it
  (after resizing, the letterbox of pad mode and the range mapping; value * 255);
- `keyframes/passP-frameK.png`: the keyframes as the appearance branch (or SparseCtrl) received them, decoded from
  the latents it was given (the user's keyframes; in a hierarchical edit's dense pass, the sparse pass's frames);
- `sdedit/frameK.png`: the source frames SDEdit encoded, when `strength` < 1;
- `mask/passP-windowW/POS-frameK.png`: a region edit's latent mask at each window position (white: edited; one
  pixel per latent), with each window's edited fraction in the JSON.
Paths in the JSON are relative to the folder. For the VACE pipeline (`pipelines/vace_recording.py`) a window's frames
are the pixel frames its latent frames hold, its "structure" is the context video VACE took (the maps where it
generates, kept keyframes and source elsewhere), its mask is VACE's per pixel, and its anchor is -1 (none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .io import write_image
from .pipelines.recording import ConditionsRecord

JSON_NAME = "conditions.json"


def _levels(maps: torch.Tensor) -> int:
    return int(torch.unique(maps).numel())


def write_conditions(folder: Path, record: ConditionsRecord, names: list[str]) -> dict:
    """Write `record` (from an edit with structure annotators `names`, one per ControlNet) into `folder` (created;
    the caller stages and publishes it); returns the JSON written."""
    folder.mkdir(parents=True)
    passes = []
    for p, pass_record in enumerate(record.passes):
        keyframes = []
        for k, frame in enumerate(pass_record.keyframe_frames):
            entry = {"frame": frame}
            if pass_record.keyframe_images is not None:
                entry["image"] = f"keyframes/pass{p}-frame{frame:05d}.png"
                _write_png(folder / entry["image"], pass_record.keyframe_images[k])
            keyframes.append(entry)
        windows = []
        for w in pass_record.windows:
            structure = {}
            for name, maps, (low, high) in zip(names, w.structure, w.structure_ranges, strict=True):
                sub = f"structure/{name}/pass{p}-window{w.window_index}"
                for position, (frame, image) in enumerate(zip(w.frames, maps)):
                    _write_png(folder / sub / f"{position:03d}-frame{frame:05d}.png", image.permute(1, 2, 0).numpy())
                structure[name] = {"folder": sub, "min": low, "max": high, "levels": _levels(maps)}
            windows.append({
                "window": w.window_index, "frames": list(w.frames), "anchor": w.anchor,
                "keyframes": [{"frame": k, "position": position} for k, position in w.keyframes],
                "structure": structure, "mask": _write_mask(folder, f"mask/pass{p}-window{w.window_index}", w),
            })
        passes.append({"frames": list(pass_record.frames), "keyframes": keyframes, "windows": windows})
    sdedit = None
    if record.sdedit_frames is not None:
        for k, image in enumerate(record.sdedit_frames):
            _write_png(folder / "sdedit" / f"frame{k:05d}.png", image)
        sdedit = {"strength": record.strength, "first_timestep": record.sdedit_first_timestep, "folder": "sdedit",
                  "frames": len(record.sdedit_frames)}
    data = {
        "structure": {"annotators": list(names), "scales": list(record.structure_scales)},
        "appearance": {"scale": record.appearance_scale, "acts": record.appearance_acts},
        "prior": {"kind": record.prior, "coefficient": record.prior_coefficient},
        "sdedit": sdedit,
        "passes": passes,
    }
    (folder / JSON_NAME).write_text(json.dumps(data, indent=2) + "\n")
    return data


def _write_mask(folder: Path, sub: str, window) -> dict | None:
    """A window's latent mask as PNGs (white: edited), and its entry in the JSON; None without a region."""
    if window.mask is None:
        return None
    for position, (frame, mask) in enumerate(zip(window.frames, window.mask)):
        image = np.repeat(mask.numpy().astype(np.uint8)[..., None] * 255, 3, axis=2)
        _write_png(folder / sub / f"{position:03d}-frame{frame:05d}.png", image)
    return {"folder": sub, "edited_fraction": round(float(window.mask.float().mean()), 6)}


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.ascontiguousarray(image))
