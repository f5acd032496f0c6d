"""A full disk in words: recognised in any error (also one that crossed a process as text), told in one line.

A full disk is no job's fault and no bad input: every job after it fails the same way, and what it needs
is space, then the same command again (what finished is kept and skipped).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: BaseException | None) -> bool:
    """`exc`, or what caused it, is "no space left on device" (or a disk quota exceeded)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if any(f"[Errno {code}]" in str(exc) for code in NO_SPACE):  # a job's error, passed on as its text
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_mb(path: Path) -> int:
    """Megabytes free to this user on the filesystem of `path` (its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free // 2**20


def no_space_message(path: Path) -> str:
    return f"no space left on {path}: {free_mb(path)} MB free; free space and rerun the same command"
