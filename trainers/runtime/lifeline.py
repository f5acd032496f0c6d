"""Every process of a sweep on this host ends with its sweeper, SIGKILL of the sweeper included.

A SIGKILLed sweeper runs no handler, and the processes that run its jobs do not notice it is gone: joblib's
loky workers take the next queued job and train on for minutes, and submitit's local jobs run to their end,
with nobody to collect them, racing a rerun on the same run directories. So the sweeper names itself in
the environment (`bind`: host, pid and start time, which a reused pid does not match), every process it
starts inherits the name, and a process that runs jobs (`hold`: a loky worker as it starts, a job's process
in a sweep) SIGKILLs itself within half a second of that process being gone. Its job runner and forkserver
(trainers/job/isolate.py) and torchrun's workers end with it, as they end with their parent.

A SLURM job is the scheduler's, not its sweeper's (it runs on another host, and a requeue outlives any
sweeper): `hold` leaves it alone, and `scancel` ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

ENV = "SFTSWEEP_SWEEPER"
POLL_S = 0.5

_holding: tuple[str, int] | None = None  # (sweeper, this process): a forked child holds on its own


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), None if it is gone or a zombie; "" where
    there is no /proc and it exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def bind() -> None:
    """Name this process (the sweeper) as the one every process it starts from now on ends with."""
    os.environ[ENV] = f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or ''}"


def sweeper_alive(name: str) -> bool:
    """Whether the process `bind` named is still running (a pid now used by another process is not)."""
    _, pid, started = name.rsplit(":", 2)
    return _start_time(int(pid)) in (started, "")


def hold() -> None:
    """In a process that runs a sweep's jobs: SIGKILL it now if its sweeper is gone, else as soon as it is.

    Nothing outside a sweep, in the sweeper itself, on another host, or in a SLURM job."""
    global _holding
    name = os.environ.get(ENV)
    if not name or _holding == (name, os.getpid()) or os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return
    host, pid, _ = name.rsplit(":", 2)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return
    if not sweeper_alive(name):
        os.kill(os.getpid(), signal.SIGKILL)
    _holding = (name, os.getpid())
    threading.Thread(target=_watch, args=(name,), name="sftsweep-lifeline", daemon=True).start()


def die_with_parent() -> None:
    """Linux: SIGKILL this process the moment its parent ends (prctl PR_SET_PDEATHSIG). For a helper process
    that serves one process and must not outlive it: a job runner's forkserver, which else exits only after
    a slow interpreter shutdown of its preloaded modules (seconds under load)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _watch(name: str) -> None:
    while sweeper_alive(name):
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)
