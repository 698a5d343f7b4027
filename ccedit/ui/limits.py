"""The studio's upload size limit (`ccedit ui --max-upload-mb`): its default and its check. Nothing heavy is
imported here: the command line reads the default before anything loads."""

from __future__ import annotations

from ..errors import UserError

DEFAULT_MAX_UPLOAD_MB = 200  # a larger clip or image upload is refused


def upload_limit_bytes(max_mb: float) -> int:
    """`--max-upload-mb` in bytes (what Gradio's upload route and `uploads.py` compare with)."""
    if not max_mb > 0:
        raise UserError(f"--max-upload-mb must be a positive number of megabytes, got {max_mb:g}")
    return int(max_mb * 1024 * 1024)
