"""Progress and summary of a sweep, read from the run directories' result.json files.

Reading results from disk rather than from the launcher works the same for every launcher:
in-process, joblib workers, or SLURM jobs on other nodes sharing the filesystem. The sweeper writes
its plan (`sweep_plan.json`: every point it will run and its run directory, refinement's included as
they are added) before it launches anything, so that a status view can list the points that have not
started, even after the sweeper itself has died.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sweep.grid import GridPoint
from trainers.runtime.run_dir import RESULT, atomic_write_json, read_result

PLAN = "sweep_plan.json"


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plan_run_dir(run_dir: Path, sweep_dir: Path) -> str:
    """A run directory as the plan records it: relative to the sweep directory where it lies under it, so that a
    moved or copied sweep reads its own runs (`make status`); else absolute."""
    run_dir, sweep_dir = Path(os.path.abspath(run_dir)), Path(os.path.abspath(sweep_dir))
    return str(run_dir.relative_to(sweep_dir)) if run_dir.is_relative_to(sweep_dir) else str(run_dir)


def write_plan(path: Path, points: Sequence[GridPoint], run_dirs: Sequence[Path]) -> None:
    """sweep_plan.json: every planned point with its run directory (`plan_run_dir`), written atomically."""
    atomic_write_json(path, {"points": [
        {"method": p.method, "lr": p.lr, "beta": p.beta, "seed": p.seed, "label": p.label(),
         "run_dir": plan_run_dir(d, path.parent),
         **({"setting": p.setting.name} if p.setting else {})}
        for p, d in zip(points, run_dirs, strict=True)
    ]})


def statuses(run_dirs: Sequence[Path], since: float | None = None) -> list[str]:
    """Status of each run: ok / diverged / failed, or "missing" (none yet, or older than `since`)."""
    out = []
    for run_dir in run_dirs:
        path = Path(run_dir) / RESULT
        result = read_result(run_dir)
        if result is None or (since is not None and path.stat().st_mtime < since):
            out.append("missing")
        else:
            out.append(result.get("status", "failed"))
    return out


class ProgressMonitor:
    """Prints a line whenever a job of the sweep finishes: done/total, failures, elapsed, ETA."""

    def __init__(self, run_dirs: Sequence[Path], total: int, already_done: int, interval_s: float = 5.0):
        self.run_dirs, self.total, self.already_done = list(run_dirs), total, already_done
        self.interval_s = interval_s
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)
        self._last: tuple | None = None

    def __enter__(self) -> ProgressMonitor:
        self.print_line()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)
        self.print_line()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.print_line()

    def print_line(self) -> None:
        counts = Counter(statuses(self.run_dirs, since=self.started))
        finished = len(self.run_dirs) - counts["missing"]
        state = (finished, counts["diverged"], counts["failed"])
        if state == self._last:
            return
        self._last = state
        elapsed = time.time() - self.started
        remaining = len(self.run_dirs) - finished
        eta = f", ETA {_fmt_duration(elapsed / finished * remaining)}" if finished and remaining else ""
        print(
            f"[sweep] {self.already_done + finished}/{self.total} done "
            f"({counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed this run), "
            f"elapsed {_fmt_duration(elapsed)}{eta}",
            flush=True,
        )
