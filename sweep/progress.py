"""Plan, progress and summary of a sweep, read from the run directories' result.json files.

Reading results from disk rather than from the launcher works the same for every launcher:
in-process, joblib workers, or SLURM jobs on other nodes sharing the filesystem. Both sweepers write
their plan (`sweep_plan.json`: every point they will run and its run directory; refinement's points and
an Optuna study's trials are added as they are asked for) before they launch them, so that a status view
can list the points that have not started, even after the sweeper itself has died; and at their end the
summary (`sweep_summary.json`: each point's status, a failure's reason), which the report reads.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from sweep.grid import GridPoint
from trainers.runtime.run_dir import (
    DIVERGED,
    FAILED,
    MISSING,
    OK,
    RESULT,
    STOP_STATUSES,
    SWEEP_SUMMARY,
    PlannedPoint,
    atomic_write_json,
    read_planned_points,
    read_result,
)


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plan_run_dir(run_dir: Path, sweep_dir: Path) -> str:
    """A run directory as the plan records it: relative to the sweep directory where it lies under it, so that a
    moved or copied sweep reads its own runs (`make status`); else absolute."""
    run_dir, sweep_dir = Path(os.path.abspath(run_dir)), Path(os.path.abspath(sweep_dir))
    return str(run_dir.relative_to(sweep_dir)) if run_dir.is_relative_to(sweep_dir) else str(run_dir)


def planned(points: Sequence[GridPoint], run_dirs: Sequence[Path], sweep_dir: Path) -> list[PlannedPoint]:
    """The plan's record of each point: its coordinates and run directory (`plan_run_dir`)."""
    return [PlannedPoint(p.method, p.lr, p.beta, p.seed, plan_run_dir(d, sweep_dir),
                         p.setting.name if p.setting else None)
            for p, d in zip(points, run_dirs, strict=True)]


def _write_plan_file(path: Path, points: Sequence[PlannedPoint]) -> None:
    atomic_write_json(path, {"points": [p.to_json() for p in points]})


def write_plan(path: Path, points: Sequence[GridPoint], run_dirs: Sequence[Path]) -> None:
    """sweep_plan.json: every planned point with its run directory (`plan_run_dir`), written atomically."""
    _write_plan_file(path, planned(points, run_dirs, path.parent))


def read_plan(path: Path) -> list[PlannedPoint]:
    """The points of a sweep_plan.json ([] when there is none, or it cannot be read)."""
    try:
        return read_planned_points(path)
    except (OSError, ValueError):
        return []


def extend_plan(path: Path, points: Sequence[GridPoint], run_dirs: Sequence[Path]) -> None:
    """Add points to sweep_plan.json, keeping the ones it holds (a continued Optuna study's earlier trials); a
    point whose run directory is already there replaces it."""
    new = planned(points, run_dirs, path.parent)
    added = {p.run_dir for p in new}
    _write_plan_file(path, [p for p in read_plan(path) if p.run_dir not in added] + new)


def summarize(sweep_dir: Path, experiment: str, entries: Sequence[PlannedPoint], run_dirs: Sequence[Path],
              returns: dict[int, JobReturn], extra: dict[str, Any] | None = None) -> Counter:
    """sweep_summary.json and the sweep's last lines: each planned point's status (`entries` as the plan lists
    them, `run_dirs` where they are), a failure's reason from its result.json or, for a point with none, from the
    launcher's return of it (`returns`, by index). Prints the counts and each failed or missing point; returns
    the counts."""
    status = statuses(run_dirs)
    counts = Counter(status)
    rows: list[dict[str, Any]] = []
    for i, (entry, run_dir, s) in enumerate(zip(entries, run_dirs, status, strict=True)):
        row = {**dataclasses.replace(entry, run_dir=str(run_dir)).to_json(), "status": s}
        if s == FAILED:
            row["error"] = str((read_result(run_dir) or {}).get("error") or "")
        elif s == MISSING and i in returns and returns[i].status == JobStatus.FAILED:
            row["error"] = str(returns[i]._return_value).splitlines()[0]
        rows.append(row)
    atomic_write_json(sweep_dir / SWEEP_SUMMARY, {"experiment": experiment, "counts": dict(counts), "points": rows,
                                                  **(extra or {})})
    stopped = "".join(f"{counts[s]} {s}, " for s in STOP_STATUSES if counts[s])
    print(f"[sweep] finished: {counts[OK]} {OK}, {stopped}{counts[DIVERGED]} {DIVERGED}, "
          f"{counts[FAILED]} {FAILED}, {counts[MISSING]} {MISSING} of {len(entries)} -> {sweep_dir}", flush=True)
    for row in rows:
        if row["status"] in (FAILED, MISSING):
            print(f"[sweep]   {row['status']}: {row['label']} {row.get('error', '')} ({row['run_dir']})", flush=True)
    return counts


def statuses(run_dirs: Sequence[Path], since: float | None = None) -> list[str]:
    """Status of each run: its result's (RunStatus), or MISSING (none yet, or older than `since`)."""
    out = []
    for run_dir in run_dirs:
        path = Path(run_dir) / RESULT
        result = read_result(run_dir)
        if result is None or (since is not None and path.stat().st_mtime < since):
            out.append(MISSING)
        else:
            out.append(result.get("status", FAILED))
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
        finished = len(self.run_dirs) - counts[MISSING]
        state = (finished, counts[DIVERGED], counts[FAILED])
        if state == self._last:
            return
        self._last = state
        elapsed = time.time() - self.started
        remaining = len(self.run_dirs) - finished
        eta = f", ETA {_fmt_duration(elapsed / finished * remaining)}" if finished and remaining else ""
        print(
            f"[sweep] {self.already_done + finished}/{self.total} done "
            f"({counts[OK]} {OK}, {counts[DIVERGED]} {DIVERGED}, {counts[FAILED]} {FAILED} this run), "
            f"elapsed {_fmt_duration(elapsed)}{eta}",
            flush=True,
        )
