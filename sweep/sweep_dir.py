"""A sweep directory the sweeper can write, checked before any job starts.

A SWEEP_DIR that is a file, lies under one, or cannot be written would otherwise surface as a traceback
from the first job's result.json (status 1, so `make sweep` ran the report of a sweep that never ran).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sweep_dir_error(sweep_dir: Path) -> str | None:
    """Create the sweep directory and write a probe file in it; one line naming SWEEP_DIR and the fix, or None."""
    fix = "give another SWEEP_DIR (e.g. SWEEP_DIR=outputs/sweeps/<name>)"
    if sweep_dir.exists() and not sweep_dir.is_dir():
        return f"SWEEP_DIR={sweep_dir} is a file, not a directory; {fix}"
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=sweep_dir, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else sweep_dir
        reason = exc.strerror or type(exc).__name__
        return f"SWEEP_DIR={sweep_dir} cannot be written ({reason}: {where}); {fix}, or make it writable"
    return None
