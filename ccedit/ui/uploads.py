"""What the studio accepts from a browser: clips and keyframe images, checked before anything is stored.

An upload is refused in one line when it is too large, of a type ccedit does not read, or not what its name says
(a text file called `.mp4`); a path is refused unless it lies inside a folder given with `--allow`. Accepted
uploads are copied into the work folder under their content's hash (`jobs.inputs`): the upload's own name never
becomes a path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import read_image, video_info
from ..io.image import IMAGE_EXTENSIONS
from ..io.video import SUPPORTED_EXTENSIONS
from ..jobs.inputs import store_input
from .limits import upload_limit_bytes


def allowed_clip(path_text: str, allowed: list[Path]) -> Path:
    """A clip named by path: a video file inside one of the `allowed` folders (links resolved first)."""
    path = Path(path_text.strip()).expanduser().resolve()
    if not any(path.is_relative_to(folder) for folder in allowed):
        where = ", ".join(map(str, allowed)) if allowed else "none: start the studio with --allow DIR"
        raise UserError(f"{path_text.strip()} is outside the allowed folders ({where}): upload the clip instead")
    if not path.is_file():
        raise UserError(f"{path_text.strip()} is not a file in an allowed folder")
    _check_clip(path, path_text.strip())
    return path


def stored_clip(upload: str | Path, work: Path, max_mb: float) -> Path:
    """An uploaded clip of at most `max_mb` megabytes, checked, copied into `WORK/inputs/`."""
    upload = Path(upload)
    suffix = upload.suffix.lower()
    _check_size(upload, "clip", max_mb)
    if suffix not in SUPPORTED_EXTENSIONS:
        raise UserError(f"the upload is not a video ccedit reads ({', '.join(SUPPORTED_EXTENSIONS)})")
    _check_clip(upload, "the uploaded clip")
    return store_input(work, upload, suffix)


def stored_image(upload: str | Path, work: Path, size: tuple[int, int], max_mb: float) -> tuple[Path, np.ndarray]:
    """An uploaded keyframe image of at most `max_mb` megabytes and exactly the working size `(height, width)`,
    copied into `WORK/inputs/`."""
    upload = Path(upload)
    _check_size(upload, "image", max_mb)
    if upload.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"the keyframe upload is not an image ({', '.join(IMAGE_EXTENSIONS)})")
    try:
        image = read_image(upload)
    except UserError:
        raise UserError("the keyframe upload is not a readable image: export it as PNG") from None
    if image.shape[:2] != tuple(size):
        raise UserError(f"the keyframe image is {image.shape[1]}x{image.shape[0]} but the frames are {size[1]}x{size[0]}:"
                        " edit the frame shown here at its size")
    return store_input(work, upload, upload.suffix.lower()), image


def _check_size(path: Path, what: str, max_mb: float) -> None:
    if path.stat().st_size > upload_limit_bytes(max_mb):
        raise UserError(f"the {what} is larger than {max_mb:g} MB: upload a shorter or smaller one")


def _check_clip(path: Path, name: str) -> None:
    try:
        frames, _, _ = video_info(path)
    except (UserError, ValueError, OSError):
        raise UserError(f"{name} is not a readable video: export it as mp4") from None
    if frames < 1:
        raise UserError(f"{name} holds no frames")
