"""Single images (key frames, frames of a frame folder): read to and write from `uint8` RGB arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ccedit.errors import UserError, is_out_of_memory, out_of_memory
from ccedit.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB pixels.

    Alpha is dropped, grey or palette images are expanded to three channels and 16-bit images are scaled to 8 bits. An EXIF orientation tag is
    applied, so a photo taken in portrait comes back in portrait.

    Args:
        path (`str` or `os.PathLike`):
            A png, jpg, jpeg, webp or bmp file (any format Pillow opens is accepted).

    Returns:
        `np.ndarray`: `uint8` array of shape `(height, width, 3)`.

    Raises:
        `UserError`: the file is missing, empty or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise UserError(f"image {path} {what}: check the path")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is empty (0 bytes): re-export or re-download it")
    try:
        with Image.open(path) as image:
            # Phones store portrait photos as landscape pixels plus an orientation tag.
            image = ImageOps.exif_transpose(image)
            # `load` runs inside the try: a truncated file opens fine and only fails when decoded.
            image.load()
            if image.mode in SIXTEEN_BIT_GREY_MODES:
                return _sixteen_bit_grey_to_rgb(image)
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as error:
        # The header declares more pixels than any frame or keyframe could have (a damaged or hostile file);
        # decoding it would take gigabytes.
        raise UserError(f"image {path} declares too many pixels to read ({_first_line(error).split(',')[0]}): "
                        "it is damaged, or not a frame; re-export it at the clip's size") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as error:
        if is_out_of_memory(error):
            raise out_of_memory(f"reading image {path}", "free memory, or downscale the image", error) from None
        reason = _first_line(error)
        raise UserError(f"image {path} could not be decoded ({reason}): is it a complete image file?") from error
    return np.asarray(rgb, dtype=np.uint8).copy()


# Pillow's modes for 16-bit greyscale (and "I", 32-bit integers, which older Pillows use for 16-bit PNGs). 16-bit
# colour PNGs need nothing: Pillow opens them as 8-bit RGB(A), keeping the high byte of each sample.
SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _sixteen_bit_grey_to_rgb(image: Image.Image) -> np.ndarray:
    """0..65535 greys -> uint8 RGB, scaled; `convert("RGB")` would clip every value above 255 to white."""
    values = np.asarray(image).astype(np.float64)  # (H, W); I;16B arrives big-endian
    grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write RGB pixels to an image file, atomically.

    Args:
        path (`str` or `os.PathLike`):
            Output file; the format follows the extension (png, jpg, jpeg, webp or bmp).
        image (`np.ndarray`):
            `uint8` array of shape `(height, width, 3)`.

    Returns:
        `Path`: the written file.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"cannot write image {path}: use one of the extensions {', '.join(IMAGE_EXTENSIONS)}")
    _check_image(image, "image")
    pil_image = Image.fromarray(image, mode="RGB")
    with atomic_path(path) as tmp:
        _save(pil_image, tmp)
    return path


def _check_image(image: np.ndarray, name: str) -> None:
    """Raise `ValueError` unless `image` is a `uint8` `(height, width, 3)` array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"`{name}` must be a uint8 array of shape (height, width, 3), got {got}")


def _save(image: Image.Image, path: Path) -> None:
    """Save with format options that keep key frames and frame folders faithful."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        # Pillow's default quality 75 visibly blurs edges, which the edge annotators then pick up.
        image.save(path, quality=95)
    elif suffix == ".webp":
        image.save(path, lossless=True)
    else:
        image.save(path)


def _first_line(error: BaseException) -> str:
    """The first line of an exception message, clipped, so user errors stay on one line."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."
