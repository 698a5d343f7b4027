"""The checks of an edit or keyframe request that need no frames and no model: the output's name and folder, the
input's path, the keyframe images.

They import nothing heavy (no torch, diffusers or transformers), so the command line runs them before the imports
that take seconds, and a bad path is refused at once; `run_edit` and `extract_keyframe` run them too, for callers
from Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .config import EditConfig, KeyframeSpec
from .errors import UserError
from .io.image import IMAGE_EXTENSIONS
from .io.publish import check_destination
from .io.video import check_input
from .outputs import check_edit_destination

EDIT_SUFFIXES = (".mp4", ".mov")


def check_keyframe_specs(specs: list[KeyframeSpec]) -> None:
    """Checks that need no frames: the images exist, and at most one keyframe leaves its frame to the default."""
    for spec in specs:
        if not spec.is_auto and not Path(spec.source).is_file():
            raise UserError(f"keyframe image {spec.source} does not exist: check the path (or use --keyframe auto)")
    if sum(spec.index is None and not spec.match for spec in specs) > 1:
        raise UserError("several keyframes need their frames: write each as IMAGE@INDEX, e.g. --keyframe a.png@0")


def check_edit_request(input_path: str | Path, output: Path, cfg: EditConfig, *, overwrite: bool,
                       keyframes: Sequence[KeyframeSpec] = ()) -> None:
    """An edit's output name, input, keyframe images and destination (`outputs.check_edit_destination`), each
    refused in one line."""
    if output.suffix.lower() not in EDIT_SUFFIXES:
        raise UserError(f"output {output} must end in .mp4 (add output.gif=true for a GIF as well)")
    check_input(input_path)
    check_keyframe_specs(list(keyframes))
    check_reference_setting(cfg)
    check_structure_setting(cfg)
    check_mask_setting(cfg)
    check_edit_destination(input_path, output, cfg, overwrite=overwrite, keyframes=keyframes)


def check_structure_setting(cfg: EditConfig) -> None:
    """Structure annotators and ControlNets the model's kind can take (`ModelKind.check_structure`)."""
    from .config import structure_controlnets
    from .kinds import kind_for

    kind_for(cfg.model.path).check_structure(structure_controlnets(cfg))


def check_reference_setting(cfg: EditConfig) -> None:
    """Reference images (`sampling.references`) only for a model that takes them, and each one found."""
    from .kinds import KINDS, kind_for

    references = list(cfg.sampling.references)
    if references and not kind_for(cfg.model.path).conventions.reference_images:
        taking = [kind.name for kind in KINDS.values() if kind.conventions.reference_images]
        raise UserError(f"{cfg.model.path} takes no reference images: drop sampling.references, or use a model "
                        f"that takes them ({', '.join(taking)})")
    for path in references:
        if not Path(path).is_file():
            raise UserError(f"reference image {path} does not exist: check the path in sampling.references")


def check_mask_setting(cfg: EditConfig) -> None:
    """A region edit's spec parsed and its mask file found, before any frame is read (`mask.spec`); checks that
    need the frames (frame index, click inside the frame, empty mask) run in `masks.load_masks`."""
    from .masks.spec import parse_mask_spec

    spec = cfg.mask.spec
    if spec is None:
        if cfg.mask.remove:
            raise UserError("mask.remove=true removes a region but mask.spec names none: give the region to remove")
        return
    parsed = parse_mask_spec(spec)
    if parsed.path is not None and not Path(parsed.path).exists():
        raise UserError(f"mask.spec: mask file {parsed.path} does not exist: give a mask video, folder or image")


def check_keyframe_request(input_path: str | Path, output: Path, *, overwrite: bool) -> None:
    """`ccedit keyframe`'s image name, input and destination (a folder that cannot be made or written, an existing
    file without --overwrite), each refused in one line."""
    if output.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"output {output} must be an image: end it in one of {', '.join(IMAGE_EXTENSIONS)}")
    check_input(input_path)
    check_destination([output], overwrite=overwrite, flag="-o")
