"""One sweeper per sweep directory: an OS lock held for the whole sweep, and a record of who holds it.

Two sweepers on one directory run every job twice at once in the same run directories (measured before
this lock: every step twice in each `metrics.jsonl`, two W&B runs per point). A sweeper takes
`SWEEP_DIR/sweep.lock` before it reads what is done or writes anything, and holds it until its process
ends; a second one is refused in one line naming the holder (host, pid, since when), read from
`SWEEP_DIR/sweep_owner.json`, which the holder writes next to the lock. Read-only commands (`make status`,
`make plan`, the report) take no lock.

Why POSIX record locks (`fcntl.lockf`: fcntl F_SETLK) rather than flock(2):
- over NFS they are the locks the protocol carries (lockd/NLM on NFSv3, part of NFSv4); Linux emulates
  flock() on NFS with them, other systems' flock() on NFS is local to one client;
- on Lustre both need the `flock` mount option: with `localflock` a lock is seen only on its own node
  (two sweepers on two login nodes would both get it), with `noflock` the call fails, and the sweeper
  then warns in one line and runs without the lock;
- they belong to the process and are not inherited by its children (job runners, joblib workers), so
  the lock ends when the sweeper ends, SIGKILL included: a dead sweeper's lock is free for the next one,
  with no file to delete and no guess whether a pid is alive. (On NFSv4 a crashed client's locks are
  freed when its lease expires, 90 s by default.)
The catch of POSIX locks: closing any descriptor of the locked file in the holding process drops the
lock, so only this module opens it, once per process and directory.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sweep.sweep_dir import sweep_dir_error
from trainers.runtime.run_dir import atomic_write_json

LOCK = "sweep.lock"
OWNER = "sweep_owner.json"
_NO_LOCKS = {errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_held: dict[Path, int] = {}  # sweep directory -> the open descriptor of its lock (closing it would drop the lock)


class SweepDirRefused(Exception):
    """This sweeper may not use the sweep directory; the message is one line with the way out."""


def holder(sweep_dir: Path) -> dict[str, Any] | None:
    """The record the lock's holder wrote (host, pid, since), or None."""
    try:
        record = json.loads((Path(sweep_dir) / OWNER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def describe(record: dict[str, Any] | None) -> str:
    """host, pid and since when, in words."""
    if not record:
        return "its holder has not recorded itself yet"
    return f"host {record.get('host')}, pid {record.get('pid')}, since {record.get('since')}"


def _record() -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now)), "since_ts": now,
            "command": sys.orig_argv if hasattr(sys, "orig_argv") else sys.argv}


def _is_mine(record: dict[str, Any] | None) -> bool:
    return bool(record) and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()


def hold(sweep_dir: Path, tag: str = "sweep") -> dict[str, Any] | None:
    """Hold `sweep_dir` for this process until it ends; return the record of a sweeper that died holding it
    (whose lock the OS released with its process), else None.

    Raises SweepDirRefused while another live process holds it.
    """
    sweep_dir = Path(sweep_dir).resolve()
    if sweep_dir in _held:
        return None
    if (unusable := sweep_dir_error(sweep_dir)) is not None:  # a file, under a file, or not writable
        raise SweepDirRefused(unusable)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(sweep_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise SweepDirRefused(f"hydra.sweep.dir={sweep_dir} cannot be used ({exc.strerror}); give a directory "
                              "this user can write (make: SWEEP_DIR=...)") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _NO_LOCKS:
            print(f"[{tag}] warning: {sweep_dir} is on a filesystem without file locks ({os.strerror(exc.errno)}; "
                  "Lustre needs the flock mount option): nothing stops a second sweeper here", file=sys.stderr,
                  flush=True)
            return None
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise SweepDirRefused(_busy(sweep_dir)) from None
    _held[sweep_dir] = fd
    previous = holder(sweep_dir)
    atomic_write_json(sweep_dir / OWNER, _record())
    atexit.register(release, sweep_dir)
    if previous and not _is_mine(previous):
        print(f"[{tag}] took over {sweep_dir} from a sweeper that ended without releasing it "
              f"({describe(previous)})", flush=True)
        return previous
    return None


def _busy(sweep_dir: Path) -> str:
    """The refusal: who holds the directory and the ways out (its holder records itself just after locking)."""
    record = holder(sweep_dir)
    for _ in range(10):
        if record is not None:
            break
        time.sleep(0.1)
        record = holder(sweep_dir)
    pid, host = (record or {}).get("pid"), (record or {}).get("host")
    stop = f"stop it (kill {pid} on {host}), " if pid else "stop it, "
    return (f"{sweep_dir} is in use by another sweeper ({describe(record)}); wait for it to end or {stop}"
            f"or use another hydra.sweep.dir (make: SWEEP_DIR=...); make status SWEEP_DIR={sweep_dir} shows its points")


def release(sweep_dir: Path) -> None:
    """Give the directory up: remove this process's holder record, then drop the lock (at exit, or in tests)."""
    sweep_dir = Path(sweep_dir).resolve()
    fd = _held.pop(sweep_dir, None)
    if fd is None:
        return
    if _is_mine(holder(sweep_dir)):
        (sweep_dir / OWNER).unlink(missing_ok=True)
    os.close(fd)
