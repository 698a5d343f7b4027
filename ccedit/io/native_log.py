"""What native decoders (decord, ffmpeg's libraries) write straight to the process's stderr, caught and kept.

decord logs every failed open (twice: it tries twice) and ffmpeg's demuxers log their complaints at the C level,
where Python's logging and warnings filters cannot reach. Around a native call, file descriptor 2 is pointed at a
temporary file; the caller turns what was caught into its one-line error (`decoder_reason`), and a call that
succeeds only logs it at INFO. Python's own writes to stderr are not made inside these blocks, so no progress bar
or warning is lost; other threads' native writes during the call would be caught too (ccedit decodes in one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# "[12:00:00] /path/to/file.cc:123: " (decord) and "[mov,mp4,m4a @ 0x55d1c0] " (ffmpeg) start their lines.
_PREFIXES = re.compile(r"^(\[\d{2}:\d{2}:\d{2}\] \S+:\d+: |\[[^\]]* @ 0x[0-9a-f]+\] )")


@contextlib.contextmanager
def native_stderr_caught(what: str = "decoder") -> Iterator[list[str]]:
    """Catch what native code writes to file descriptor 2 inside the block; yields a list that holds the caught
    lines (prefixes removed, repeats dropped) once the block ends, also when it raises."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr (closed, or replaced without a descriptor)
        yield lines
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                line = _PREFIXES.sub("", line.strip()).strip()
                if line and line not in lines:
                    lines.append(line)
            if lines:
                logger.info("%s said: %s", what, " | ".join(lines))


def decoder_reason(lines: list[str], error: BaseException) -> str:
    """The most telling words for a failed decode: the first caught line that is not the library restating the
    error, else the error's own first line."""
    text = str(error).strip().splitlines()
    fallback = _PREFIXES.sub("", text[0]).strip() if text else type(error).__name__
    for line in lines:
        if not line.startswith(("ERROR opening", "Error reading")):
            return line
    return fallback
