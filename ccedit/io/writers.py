"""Writing results: H.264 mp4, GIF, folders of png frames, and side-by-side comparisons.

Encoding goes through the ffmpeg binary bundled with imageio-ffmpeg, so no system ffmpeg is needed. Every writer
goes through `atomic_path` and checks what it wrote before the rename (ffmpeg's exit status, then the file re-opened
and its frames counted): an interrupted or failed write leaves nothing at the destination and raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ccedit.errors import UserError
from ccedit.io.atomic import atomic_path
from ccedit.io.image import _save

logger = logging.getLogger(__name__)

MP4_EXTENSIONS = (".mp4", ".mov")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18) -> Path:
    """Encode frames as an H.264 video that plays in browsers, atomically.

    The stream is yuv420p with the index at the start of the file (`+faststart`), which is what browsers and
    QuickTime require. yuv420p needs even sides, so an odd height or width is padded by repeating the last row or
    column (with a warning). A `.gif` path is handed to `write_gif`.

    Args:
        path (`str` or `os.PathLike`):
            Output `.mp4` or `.mov` file (or `.gif`).
        frames (`np.ndarray`):
            `uint8` RGB array of shape `(frames, height, width, 3)`.
        fps (`float`):
            Frame rate; fractional rates are kept exactly.
        crf (`int`, defaults to 18):
            x264 constant rate factor, 0 (lossless) to 51; 18 is visually lossless.

    Returns:
        `Path`: the written file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix not in MP4_EXTENSIONS:
        raise UserError(f"cannot write video {path}: use a .mp4, .mov or .gif file name")
    _check_frames(frames)
    _check_fps(fps)
    if not 0 <= crf <= 51:
        raise ValueError(f"`crf` must be in [0, 51], got {crf}")

    frames = _pad_to_even(frames, path)
    with atomic_path(path) as tmp:
        _encode(
            tmp,
            frames,
            fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            output_params=["-crf", str(crf), "-movflags", "+faststart"],
        )
        verify_video(tmp, frames.shape[0], frames.shape[1:3])
    return path


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write frames as a looping GIF, atomically.

    Each GIF uses one 256-colour palette computed from the whole clip. Frame delays are whole centiseconds, so a
    rate such as 8 fps (125 ms) alternates 130 and 120 ms delays that average to the exact rate; identical
    consecutive frames are kept as separate frames.

    Args:
        path (`str` or `os.PathLike`):
            Output `.gif` file.
        frames (`np.ndarray`):
            `uint8` RGB array of shape `(frames, height, width, 3)`.
        fps (`float`):
            Frame rate.

    Returns:
        `Path`: the written file.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise UserError(f"cannot write GIF {path}: use a .gif file name")
    _check_frames(frames)
    _check_fps(fps)
    # ffmpeg rather than Pillow: Pillow merges identical consecutive frames, changing the frame count.
    palette = "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer"
    with atomic_path(path) as tmp:
        _encode(tmp, frames, fps, codec="gif", pix_fmt_out="pal8", output_params=["-vf", palette, "-loop", "0"])
        verify_video(tmp, frames.shape[0], frames.shape[1:3])
    return path


def write_frames(folder: str | os.PathLike, frames: np.ndarray, *, ext: str = "png") -> Path:
    """Write each frame as an image `00000.png`, `00001.png`, ... in a folder, atomically.

    Args:
        folder (`str` or `os.PathLike`):
            Output folder; replaced as a whole if it exists.
        frames (`np.ndarray`):
            `uint8` RGB array of shape `(frames, height, width, 3)`.
        ext (`str`, defaults to `"png"`):
            Image format: `"png"` (lossless), `"jpg"`, `"webp"` or `"bmp"`.

    Returns:
        `Path`: the written folder.
    """
    folder = Path(folder)
    ext = ext.lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg", "webp", "bmp"):
        raise UserError(f"cannot write frames as .{ext}: use png, jpg, webp or bmp")
    _check_frames(frames)
    with atomic_path(folder, is_dir=True) as tmp:
        for i, frame in enumerate(frames):
            _save(Image.fromarray(np.ascontiguousarray(frame), mode="RGB"), tmp / f"{i:05d}.{ext}")
        verify_frames(tmp, frames.shape[0], ext)
    return folder


def side_by_side(*videos: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """Place videos next to each other, e.g. "source | structure map | result".

    Every video is resized, keeping its aspect ratio, to the height of the first one.

    Args:
        *videos (`np.ndarray`):
            `uint8` RGB arrays of shape `(frames, height, width, 3)`, all with the same number of frames.
        labels (`Sequence[str]`, *optional*):
            One caption per video, drawn in its top-left corner.

    Returns:
        `np.ndarray`: `uint8` array of shape `(frames, height of the first, sum of the resized widths, 3)`.
    """
    if not videos:
        raise ValueError("`side_by_side` needs at least one video")
    for i, video in enumerate(videos):
        _check_frames(video, f"videos[{i}]")
    counts = [v.shape[0] for v in videos]
    if len(set(counts)) != 1:
        raise ValueError(f"all videos must have the same number of frames, got {counts}")
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"`labels` must have one entry per video ({len(videos)}), got {len(labels)}")

    height = videos[0].shape[1]
    panels = []
    for i, video in enumerate(videos):
        src_h, src_w = video.shape[1:3]
        if src_h != height:
            width = max(1, round(src_w * height / src_h))
            interpolation = cv2.INTER_AREA if height < src_h else cv2.INTER_CUBIC
            video = np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in video])
        else:
            video = video.copy()  # the labels are drawn in place
        if labels is not None and labels[i]:
            for frame in video:
                _draw_label(frame, labels[i])
        panels.append(video)
    return np.concatenate(panels, axis=2)


def _draw_label(frame: np.ndarray, text: str) -> None:
    """Draw white text with a black outline, readable on any background, scaled to the frame height."""
    scale = max(0.4, frame.shape[0] / 512 * 0.8)
    thickness = max(1, round(scale * 2))
    (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = (round(8 * scale), round(8 * scale) + text_h)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


class EncoderError(OSError):
    """ffmpeg failed or wrote a file that does not hold the frames it was given (e.g. on a full disk)."""


def _encode(
    path: Path, frames: np.ndarray, fps: float, *, codec: str, pix_fmt_out: str, output_params: list[str]
) -> None:
    """Pipe raw RGB frames into the bundled ffmpeg and raise `EncoderError` unless it exits cleanly.

    ffmpeg is driven directly rather than through `imageio_ffmpeg.write_frames`, which never looks at ffmpeg's
    exit status: a write that failed half-way (a full disk) would pass for a finished one.
    """
    import subprocess
    import tempfile
    from fractions import Fraction

    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    rate = Fraction(float(fps)).limit_denominator(1_000_000)  # fractional rates such as 30000/1001 stay exact
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-v", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate), "-i", "-",
        "-an", "-vcodec", codec, "-pix_fmt", pix_fmt_out, *output_params, str(path),
    ]
    # ffmpeg's messages go to a file, not a pipe: a pipe nobody reads while frames are sent could fill and stall.
    with tempfile.TemporaryFile() as log:
        # Its own session, so a Ctrl-C in the terminal reaches Python, which then stops ffmpeg itself.
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True)
        try:
            try:
                for frame in frames:
                    process.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its exit status and message below say why
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            status = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        if status != 0:
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit status {status}"
            raise EncoderError(f"ffmpeg could not write {path.name}: {reason}")


def verify_video(path: str | os.PathLike, num_frames: int, size: tuple[int, int]) -> None:
    """Re-open a written mp4 or GIF and raise `EncoderError` unless it has `num_frames` decodable frames of `size`.

    The frame count comes from the container; decoding the first and the last frame catches a file cut short.
    """
    from ccedit.io.video import _open_source

    path = Path(path)
    try:
        source = _open_source(path, folder_fps=1.0)
        found = source.num_frames
        decoded = source.read([0, found - 1]) if found == num_frames else None
    except (UserError, RuntimeError, OSError, ValueError) as error:
        raise EncoderError(f"{path.name} was written but cannot be read back: {error}") from error
    if found != num_frames:
        raise EncoderError(f"{path.name} was written with {found} frames instead of {num_frames}")
    if tuple(decoded.shape[1:3]) != tuple(size):
        raise EncoderError(f"{path.name} was written at {decoded.shape[2]}x{decoded.shape[1]}, not {size[1]}x{size[0]}")


def verify_frames(folder: str | os.PathLike, num_frames: int, ext: str) -> None:
    """Raise `EncoderError` unless `folder` holds `num_frames` intact images (checksums checked, not decoded)."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    expected = [f"{i:05d}.{ext}" for i in range(num_frames)]
    if names != expected:
        raise EncoderError(f"{folder.name} holds {len(names)} frames instead of {num_frames}")
    for name in names:
        try:
            with Image.open(folder / name) as image:
                image.verify()
        except Exception as error:  # Pillow raises many types for a damaged file
            raise EncoderError(f"{folder.name}/{name} was written but is damaged: {error}") from error


def _pad_to_even(frames: np.ndarray, path: Path) -> np.ndarray:
    """Repeat the last row/column so both sides are even, as yuv420p requires."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    new_size = f"{width + pad_w}x{height + pad_h}"
    logger.warning("%s: yuv420p needs even sides; padding %dx%d frames to %s", path, width, height, new_size)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _check_frames(frames: np.ndarray, name: str = "frames") -> None:
    """Raise `ValueError` unless `frames` is a non-empty `uint8` `(frames, height, width, 3)` array."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        is_array = isinstance(frames, np.ndarray)
        got = f"{frames.dtype} array of shape {frames.shape}" if is_array else type(frames).__name__
        raise ValueError(f"`{name}` must be a uint8 array of shape (frames, height, width, 3), got {got}")
    if 0 in frames.shape:
        raise ValueError(f"`{name}` is empty, shape {frames.shape}")


def _check_fps(fps: float) -> None:
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and fps > 0):
        raise ValueError(f"`fps` must be a positive number, got {fps!r}")
