"""Who runs a job: this process (host, pid, start time), and whether a recorded owner is gone.

A pid alone is not enough: after a crash the system may give the same pid to another process, so the owner's
start time must match too. An owner on another host cannot be looked at; its lease (renewed while it works)
says whether it is alive.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass

import psutil

LEASE_SECONDS = 120.0  # an owner that has not renewed its lease for this long is taken for dead
_START_TOLERANCE = 1.0  # seconds: start times are read back at the clock tick's resolution


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float  # the process's start time (seconds since the epoch)

    def to_dict(self) -> dict:
        return asdict(self)


def this_process() -> Owner:
    return Owner(socket.gethostname(), os.getpid(), psutil.Process().create_time())


def owner_is_gone(owner: Owner, lease_until: float | None, now: float | None = None) -> bool:
    """Whether a job's owner no longer works on it: its lease ran out, or it is a process of this host that no
    longer exists (its pid is gone, or another process has it now)."""
    now = time.time() if now is None else now
    if lease_until is not None and lease_until < now:
        return True
    if owner.host != socket.gethostname():
        return False
    try:
        process = psutil.Process(owner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return True
        started = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # another user's process: it exists, and its start time says whether it is ours
        return False
    return abs(started - owner.started) > _START_TOLERANCE
