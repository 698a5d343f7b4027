"""Reading input clips: video files (decord), GIFs (Pillow) and folders of frames, with CCEdit's frame selection."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from ccedit.errors import UserError, is_out_of_memory
from ccedit.io.frame_times import frames_nearest, variable_rate
from ccedit.io.image import IMAGE_EXTENSIONS, _first_line, read_image
from ccedit.io.native_log import decoder_reason, native_stderr_caught

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
GIF_EXTENSIONS = (".gif",)
SUPPORTED_EXTENSIONS = VIDEO_EXTENSIONS + GIF_EXTENSIONS

# (clip, asked fps, source fps) whose rate mismatch was already said in this process.
_rates_warned: set[tuple[str, float, float]] = set()
# For clips that declare no rate: browsers show a GIF frame without a delay for 100 ms.
_DEFAULT_FPS = 10.0


@dataclass
class VideoClip:
    """Frames selected from a clip, and where they came from.

    Args:
        frames (`np.ndarray`):
            `uint8` RGB array of shape `(frames, height, width, 3)`.
        fps (`float`):
            Frame rate of `frames`: `source_fps / gap`, where `gap` is the step between selected source frames.
        source_fps (`float`):
            Frame rate of the source.
        source_size (`tuple[int, int]`):
            Source `(height, width)`; equal to `frames.shape[1:3]` unless a `frame_transform` resized them.
        indices (`list[int]`):
            Source frame index of each selected frame.
        path (`Path`):
            The file or folder read.
    """

    frames: np.ndarray
    fps: float
    source_fps: float
    source_size: tuple[int, int]
    indices: list[int] = field(default_factory=list)
    path: Path | None = None

    @property
    def num_frames(self) -> int:
        """Number of selected frames."""
        return int(self.frames.shape[0])


def read_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    start: float = 0.0,
    folder_fps: float = 8.0,
    max_frames: int | None = None,
    frame_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk_size: int = 32,
) -> VideoClip:
    """Read frames from a video file, a GIF or a folder of frames.

    Frame selection follows the original CCEdit: skip to the frame nearest `start` seconds, then take every
    `gap`-th frame with `gap = round(source_fps / fps)` (numpy rounding, at least 1; 18 fps -> 6 fps takes every
    3rd frame), or every frame when `fps` is not given, and keep the first `num_frames`. Only the selected frames
    are decoded.

    Args:
        path (`str` or `os.PathLike`):
            An mp4, mov, webm, mkv, avi or gif file, or a folder of png/jpg/jpeg/webp/bmp frames taken in natural
            order (`2.png` before `10.png`).
        num_frames (`int`, *optional*):
            Number of frames to return; all available frames when not given.
        fps (`float`, *optional*):
            Target frame rate; the returned `VideoClip.fps` is `source_fps / gap`, which may differ slightly.
        start (`float`, defaults to 0.0):
            Start time in seconds.
        folder_fps (`float`, defaults to 8.0):
            Frame rate of a folder of frames, which has no timing of its own.
        max_frames (`int`, *optional*):
            Take at most this many frames, and fewer without complaint when the clip is shorter (ignored when
            `num_frames` is given).
        frame_transform (`Callable`, *optional*):
            Applied to each chunk of decoded frames (e.g. fitting them to the working size), so that a long clip
            is never held at its source resolution: memory stays bounded by `chunk_size` source frames.
        chunk_size (`int`, defaults to 32):
            Frames decoded at a time when `frame_transform` is given.

    Returns:
        `VideoClip`: the frames and their provenance.

    Raises:
        `UserError`: the path is missing, empty, unsupported, undecodable or has no frames, `start` is past the
            end, or fewer than `num_frames` frames are available.
    """
    path = Path(path)
    _check_selection(num_frames, fps, start, folder_fps)
    source = _open_source(path, folder_fps)
    # 1. Select source frame indices.
    indices, out_fps = _select_indices(path, source.num_frames, source.fps, num_frames=num_frames, fps=fps,
                                       start=start, max_frames=max_frames)
    # 2. Decode only those frames (for a variable-rate clip, the frames shown at those grid positions' times).
    indices = source.frames_at(indices)
    frames, source_size = _decode(source, indices, frame_transform, chunk_size)
    return VideoClip(
        frames=frames,
        fps=out_fps,
        source_fps=source.fps,
        source_size=source_size,
        indices=indices,
        path=path,
    )


def _check_selection(num_frames: int | None, fps: float | None, start: float, folder_fps: float) -> None:
    """One line for a frame selection that can select nothing, before the file is opened."""
    if num_frames is not None and num_frames < 1:
        raise UserError(f"video.num_frames must be at least 1, got {num_frames}")
    if fps is not None and not fps > 0:
        raise UserError(f"video.fps must be positive, got {fps}")
    if not start >= 0:
        raise UserError(f"video.start must be 0 or more seconds, got {start}")
    if not folder_fps > 0:
        raise UserError(f"the frame rate of a frame folder must be positive, got {folder_fps}")


def _select_indices(path: Path, total: int, source_fps: float, *, num_frames: int | None, fps: float | None,
                    start: float, max_frames: int | None) -> tuple[list[int], float]:
    """The selected positions on the source's constant-rate grid (see `read_video`) and the rate they make."""
    gap = 1 if fps is None else max(1, int(np.round(source_fps / fps)))
    out_fps = source_fps / gap
    if fps is not None and abs(out_fps - fps) > 0.05 * fps and (str(path), fps, source_fps) not in _rates_warned:
        _rates_warned.add((str(path), fps, source_fps))  # once: training reads the same clip at every step
        logger.warning(
            "%s: %.3g fps does not divide the source's %.3g fps; taking 1 frame in %d, i.e. %.3g fps",
            path, fps, source_fps, gap, out_fps,
        )
    first = int(np.round(start * source_fps))
    if first >= total:
        raise UserError(
            f"{path} is {total / source_fps:.2f} s long ({total} frames at {source_fps:g} fps); "
            f"video.start={start:g} is past the end: use a start below {total / source_fps:.2f}"
        )
    indices = list(range(first, total, gap))
    if num_frames is not None:
        if len(indices) < num_frames:
            raise UserError(
                f"{path} has {len(indices)} frames at {out_fps:g} fps from {start:g} s; video.num_frames={num_frames} "
                f"asks for more: use video.num_frames={len(indices)} or a lower video.fps"
            )
        indices = indices[:num_frames]
    elif max_frames is not None:
        indices = indices[:max_frames]
    return indices, out_fps


def _decode(source: _Source, indices: list[int], frame_transform: Callable[[np.ndarray], np.ndarray] | None,
            chunk_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The source frames at `indices` and the source's (height, width); with `frame_transform`, decoded and
    transformed chunk by chunk, so that the clip is never held at its source resolution."""
    if frame_transform is None:
        frames = source.read(indices)
        return frames, (int(frames.shape[1]), int(frames.shape[2]))
    chunks = [frame_transform(source.read(indices[i : i + chunk_size])) for i in range(0, len(indices), chunk_size)]
    frames = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    return frames, tuple(int(v) for v in source.size)


def video_info(path: str | os.PathLike, *, folder_fps: float = 8.0) -> tuple[int, float, tuple[int, int]]:
    """Frame count, frame rate and `(height, width)` of a clip, decoding at most its first frame.

    Args:
        path (`str` or `os.PathLike`):
            Any input `read_video` accepts.
        folder_fps (`float`, defaults to 8.0):
            Frame rate reported for a folder of frames.

    Returns:
        `tuple[int, float, tuple[int, int]]`: `(num_frames, fps, (height, width))`.
    """
    source = _open_source(Path(path), folder_fps)
    return source.num_frames, source.fps, source.size


class _Source:
    """A readable clip: frame count and fps known on opening, frames decoded only on `read`."""

    path: Path
    num_frames: int
    fps: float
    size: tuple[int, int]

    def read(self, indices: list[int]) -> np.ndarray:
        raise NotImplementedError

    # Start time in seconds of each frame, set only when the clip's frame rate varies.
    times: np.ndarray | None = None

    def frames_at(self, indices: list[int]) -> list[int]:
        """The frames for positions `indices` of a constant-rate grid at `fps`: the same for a constant-rate clip,
        the frames nearest those times for a variable-rate one (`frame_times`)."""
        return indices if self.times is None else frames_nearest(self.times, self.fps, indices)


def check_input(path: str | os.PathLike) -> None:
    """Refuse, with one line and without opening it, an input that cannot be a clip: missing, of an unsupported
    type, or empty."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the path to the input video")
    if path.is_dir():
        return
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(s.lstrip(".") for s in SUPPORTED_EXTENSIONS)
        kind = suffix or "(no extension)"
        raise UserError(f"{path}: unsupported input type {kind}; use {supported} or a folder of frames")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): re-export or re-download it")


def _open_source(path: Path, folder_fps: float) -> _Source:
    """Check the path and open it with the reader its kind needs."""
    check_input(path)
    if path.is_dir():
        return _FolderSource(path, folder_fps)
    if path.suffix.lower() in GIF_EXTENSIONS:
        return _GifSource(path)
    return _DecordSource(path)


class _DecordSource(_Source):
    """Video files through decord, which seeks to the selected frames instead of decoding everything."""

    def __init__(self, path: Path):
        import decord  # heavy native import, only needed for video files

        self.path = path
        # decord and ffmpeg log a failed open on stderr (several lines); the error below says it in one.
        with native_stderr_caught("decord") as said:
            try:
                self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            except Exception as error:  # decord raises RuntimeError or its own DECORDError
                failure = error
            else:
                failure = None
        if failure is not None:
            if "cannot find video stream" in str(failure):
                raise UserError(f"{path} has no video frames (no video stream): pass a file with video") from failure
            raise _undecodable(path, failure, said=said) from failure
        self.num_frames = len(self._reader)
        if self.num_frames == 0:
            raise UserError(f"{path} has no video frames (0 frames): pass a file with video")
        fps = float(self._reader.get_avg_fps())
        if not fps > 0:
            logger.warning("%s declares no frame rate; assuming %g fps", path, _DEFAULT_FPS)
            fps = _DEFAULT_FPS
        self.fps = fps
        self._size: tuple[int, int] | None = None
        # The container's timestamps reveal a variable frame rate, which the declared average rate hides.
        try:
            with native_stderr_caught("decord"):
                stamps = np.asarray(self._reader.get_frame_timestamp(list(range(self.num_frames))), dtype=np.float64)
        except Exception as error:  # a container without usable timestamps: keep the declared rate
            logger.info("%s: no frame timestamps (%s); assuming a constant frame rate", path, _first_line(error))
        else:
            variable_fps = variable_rate(path, stamps[:, 0], float(stamps[-1, 1]))
            if variable_fps is not None:
                self.fps, self.times = variable_fps, stamps[:, 0]

    @property
    def size(self) -> tuple[int, int]:
        # decord exposes no header size, so decode the first frame, only when asked (`video_info`).
        if self._size is None:
            with native_stderr_caught("decord") as said:
                try:
                    shape, failure = self._reader[0].shape, None
                except Exception as error:
                    failure = error
            if failure is not None:
                raise _undecodable(self.path, failure, said=said) from failure
            self._size = (int(shape[0]), int(shape[1]))
        return self._size

    def read(self, indices: list[int]) -> np.ndarray:
        with native_stderr_caught("decord") as said:
            try:
                frames, failure = self._reader.get_batch(indices).asnumpy(), None
            except Exception as error:
                failure = error
        if failure is not None:
            if _DECORD_ROW_PADDING in str(failure):
                return _read_with_ffmpeg(self.path, indices)
            raise _undecodable(self.path, failure, len(indices), said=said) from failure
        return np.ascontiguousarray(frames, dtype=np.uint8)


# decord copies decoded rows without their alignment padding only for frames wider than it; tiny frames (a 1x1 or
# 2x2 clip) fail with this check although the file is fine.
_DECORD_ROW_PADDING = "DECORDArrayCopyFromTo"


def _read_with_ffmpeg(path: Path, indices: list[int]) -> np.ndarray:
    """Frames `indices` of a video through the bundled ffmpeg (every frame decoded in order): the fallback for
    files decord cannot copy out, which are small enough for that to be cheap."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    wanted, frames = set(indices), {}
    try:
        for i, raw in enumerate(reader):
            if i in wanted:
                frames[i] = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
            if len(frames) == len(wanted):
                break
    finally:
        reader.close()
    missing = [i for i in indices if i not in frames]
    if missing:
        raise UserError(f"{path} ends before frame {missing[0]}: the file is truncated; re-encode or re-download it")
    return np.stack([frames[i] for i in indices])


class _GifSource(_Source):
    """GIFs through Pillow: decord cannot measure a GIF's duration and refuses most of them."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with Image.open(path) as image:
                durations = [frame.info.get("duration") or 0 for frame in ImageSequence.Iterator(image)]
                self.size = (image.height, image.width)
        except Exception as error:  # Pillow raises several types for broken GIFs
            raise _undecodable(path, error) from error
        self.num_frames = len(durations)
        if self.num_frames == 0:
            raise UserError(f"{path} has no frames: pass a GIF with at least one frame")
        # GIF delays are whole centiseconds, so writers alternate e.g. 120 and 130 ms for 8 fps; the mean is exact.
        mean_ms = float(np.mean(durations))
        self.fps = 1000.0 / mean_ms if mean_ms > 0 else _DEFAULT_FPS
        starts = np.cumsum([0, *durations[:-1]], dtype=np.float64) / 1000.0
        variable_fps = variable_rate(path, starts, float(np.sum(durations)) / 1000.0)
        if variable_fps is not None:
            self.fps, self.times = variable_fps, starts

    def read(self, indices: list[int]) -> np.ndarray:
        wanted, last = set(indices), max(indices)
        frames: dict[int, np.ndarray] = {}
        try:
            with Image.open(self.path) as image:
                # GIF frames are deltas on earlier ones, so iterate in order rather than seeking.
                for i, frame in enumerate(ImageSequence.Iterator(image)):
                    if i in wanted:
                        frames[i] = np.asarray(frame.convert("RGB"), dtype=np.uint8)
                    if i >= last:
                        break
        except Exception as error:
            raise _undecodable(self.path, error, len(indices)) from error
        return np.stack([frames[i] for i in indices])


class _FolderSource(_Source):
    """A folder of numbered images, one per frame."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = float(fps)
        self.files = frame_files(path)
        self.num_frames = len(self.files)
        if self.num_frames == 0:
            kinds = "/".join(s.lstrip(".") for s in IMAGE_EXTENSIONS)
            raise UserError(f"{path} has no frames: the folder holds no {kinds} files")
        # Decoding the first frame (not just its header) also catches a broken first file early.
        self.size = tuple(read_image(self.files[0]).shape[:2])

    def read(self, indices: list[int]) -> np.ndarray:
        frames = []
        for i in indices:
            frame = read_image(self.files[i])
            if frame.shape[:2] != self.size:
                raise UserError(
                    f"{self.files[i]} is {frame.shape[1]}x{frame.shape[0]} but {self.files[0].name} is "
                    f"{self.size[1]}x{self.size[0]}: all frames in {self.path} must have the same size"
                )
            frames.append(frame)
        return np.stack(frames)


def frame_files(folder: Path) -> list[Path]:
    """The frames of a frame folder, in order: its visible image files (not its subfolders), naturally sorted."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
         and p.is_file()),
        key=_natural_key,
    )


def _natural_key(path: Path) -> list:
    """Sort key putting `frame2.png` before `frame10.png`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _undecodable(path: Path, error: BaseException, num_frames: int | None = None, said: list[str] = ()) -> UserError:
    """The one-line error for a file the decoder rejects; its reason is the decoder's own most telling line (`said`,
    what it wrote to stderr), with the log prefixes removed."""
    reason = _first_line(decoder_reason(list(said), error))
    if is_out_of_memory(error):
        frames = f"{num_frames} frames of " if num_frames else ""
        return UserError(
            f"out of memory decoding {frames}{path} ({reason}): ask for fewer frames (video.num_frames) or a lower "
            "video.fps, "
            "or downscale the video first"
        )
    return UserError(
        f"{path} could not be decoded ({reason}): the file is corrupt, truncated or not a video; "
        f"re-encode it, e.g. ffmpeg -i <input> -c:v libx264 -pix_fmt yuv420p out.mp4"
    )
