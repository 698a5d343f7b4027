"""Reading and writing pixels: clips and images in, mp4/GIF/frames out, and fitting frames to the working size.

Pixels are `uint8` numpy arrays, RGB, `(frames, height, width, 3)` for video and `(height, width, 3)` for images.
"""

from ccedit.io.atomic import atomic_path
from ccedit.io.image import read_image, write_image
from ccedit.io.resize import FitRecord, fit_frames, fit_image, working_size
from ccedit.io.video import SUPPORTED_EXTENSIONS, VideoClip, read_video, video_info
from ccedit.io.writers import side_by_side, write_frames, write_gif, write_video

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "FitRecord",
    "VideoClip",
    "atomic_path",
    "fit_frames",
    "fit_image",
    "read_image",
    "read_video",
    "side_by_side",
    "video_info",
    "working_size",
    "write_frames",
    "write_gif",
    "write_image",
    "write_video",
]
