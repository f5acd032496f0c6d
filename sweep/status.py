"""Where every point of a sweep is, from the sweep directory alone: `make status SWEEP_DIR=…`.

    python -m sweep.status SWEEP_DIR [--watch [SECONDS]]

Reads only what the sweeper and the jobs leave on disk (the plan, each run's progress.json and
result.json), so it works for every launcher, on the login node while SLURM jobs run on others, and
after the sweeper itself has died. Each point is `ok`, `diverged` or `failed` (with the reason) once it
has a result, or `stopped`/`pruned` (ended early on the sweeper's request: the step it reached and its
last intermediate accuracy, never a final one), `running` (phase, step k of n, last loss, elapsed, ETA)
while its job reports progress, `lost` when its process is gone from this host without a result, and
`pending` before it starts.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.runtime.run_dir import (
    DIVERGED,
    FAILED,
    OK,
    PROGRESS,
    PRUNED,
    RESULT,
    STOP_STATUSES,
    STOPPED,
    SWEEP_PLAN,
    SWEEP_SUMMARY,
    read_planned_points,
    read_progress,
    read_result,
    read_stop_request,
)

STALE_S = 15 * 60  # a running job that has not reported for this long is flagged


@dataclass
class PointStatus:
    label: str
    state: str  # ok | stopped | pruned | diverged | failed | running | lost | pending
    detail: str
    slurm_job_id: str | None
    run_dir: Path


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def planned_points(sweep_dir: Path) -> list[tuple[str, Path]]:
    """(label, run directory) of every planned point: the sweeper's plan, else its summary, else every run
    directory found under the sweep directory. The plan's run directories are relative to the sweep directory
    (sweep.progress.plan_run_dir): a moved or copied sweep reads its own runs, never the original's."""
    for name in (SWEEP_PLAN, SWEEP_SUMMARY):
        try:
            return [(p.label, sweep_dir / p.run_dir) for p in read_planned_points(sweep_dir / name)]
        except (OSError, ValueError):
            continue
    found = sorted({p.parent for name in (RESULT, PROGRESS) for p in sweep_dir.rglob(name)
                    if "_prepare" not in p.parts})
    return [(str(d.relative_to(sweep_dir)), d) for d in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def point_status(label: str, run_dir: Path, now: float | None = None, host: str | None = None) -> PointStatus:
    """The state of one point from its run directory."""
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    result, progress = read_result(run_dir), read_progress(run_dir)
    result_time = (run_dir / RESULT).stat().st_mtime if result is not None else -math.inf
    if result is not None and (progress is None or float(progress.get("started_at", 0)) <= result_time + 1):
        state = result.get("status", FAILED)
        if state == OK:
            accuracy = result.get("select_accuracy", result.get("accuracy"))
            detail = f"accuracy {accuracy:.3f}" if isinstance(accuracy, (int, float)) else "accuracy n/a"
            if result.get("steps") is not None:
                detail += f", {result['steps']} steps"
            if isinstance(result.get("wall_s"), (int, float)):
                detail += f", {_duration(result['wall_s'])}"
        elif state in STOP_STATUSES:
            detail = stopped_detail(result)
        else:
            detail = str(result.get("error") or "")
        return PointStatus(label, state, detail, result.get("slurm_job_id"), run_dir)
    if progress is None:
        return PointStatus(label, "pending", "", None, run_dir)
    slurm = progress.get("slurm_job_id")
    pid, where = progress.get("pid"), progress.get("host")
    if where == host and isinstance(pid, int) and not _alive(pid):
        return PointStatus(label, "lost", f"process {pid} is gone without a result (rerun the sweep to run it)",
                           slurm, run_dir)
    step, max_steps, loss = progress.get("step") or 0, progress.get("max_steps"), progress.get("loss")
    parts = [progress.get("phase", "running")]
    parts.append(f"step {step}/{max_steps}" if max_steps else f"step {step}")
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.4f}")
    parts.append(f"{_duration(now - float(progress.get('started_at', now)))} elapsed")
    trained = step - int(progress.get("train_start_step") or 0)
    if max_steps and trained > 0 and progress.get("train_started_at"):
        rate = (float(progress.get("updated_at", now)) - float(progress["train_started_at"])) / trained
        parts.append(f"ETA {_duration(rate * (max_steps - step))}")
    if (request := read_stop_request(run_dir)) is not None:
        parts.append(f"asked to stop ({request['status']})")
    quiet = now - float(progress.get("updated_at", now))
    if quiet > STALE_S:
        parts.append(f"no report for {_duration(quiet)}")
    return PointStatus(label, "running", ", ".join(parts), slurm, run_dir)


def stopped_detail(result: dict[str, Any]) -> str:
    """Where a stopped or pruned run got to: its steps and last intermediate accuracy (never a final one)."""
    detail = f"at step {result.get('steps')}"
    last = result.get("last_eval") or {}
    accuracy = last.get("select_accuracy", last.get("accuracy"))
    if isinstance(accuracy, (int, float)):
        detail += f", last accuracy {accuracy:.3f} at step {last.get('step')}"
    if result.get("stop_reason"):
        detail += f" ({result['stop_reason']})"
    return detail


# the view's own states of a point without a result (running, not started, gone without one), then the
# run statuses: what needs a look first
ORDER = ("running", "pending", "lost", FAILED, DIVERGED, STOPPED, PRUNED, OK)


def render(sweep_dir: Path, statuses: list[PointStatus]) -> str:
    """One screen: a line per point, then the totals."""
    counts = Counter(s.state for s in statuses)
    width = max((len(s.label) for s in statuses), default=5)
    lines = [f"sweep {sweep_dir}  ({time.strftime('%H:%M:%S')})", ""]
    for s in statuses:
        slurm = f"  [SLURM {s.slurm_job_id}]" if s.slurm_job_id else ""
        lines.append(f"{s.label:<{width}}  {s.state:<8}  {s.detail}{slurm}".rstrip())
    totals = ", ".join(f"{counts[k]} {k}" for k in ORDER if counts[k])
    lines += ["", f"{len(statuses)} points: {totals or 'none planned yet'}"]
    return "\n".join(lines)


def sweep_status(sweep_dir: Path) -> list[PointStatus]:
    now, host = time.time(), socket.gethostname()
    return [point_status(label, run_dir, now, host) for label, run_dir in planned_points(sweep_dir)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.status", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--watch", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 5) until Ctrl-C")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: SWEEP_DIR={args.sweep_dir} is not a directory; give the sweep's directory "
              "(make status SWEEP_DIR=outputs/sweeps/<experiment>)", file=sys.stderr)
        return 2
    if not planned_points(args.sweep_dir):
        print(f"error: SWEEP_DIR={args.sweep_dir} holds no sweep (no {SWEEP_PLAN} and no run directory under it); give "
              "a sweep's directory (make status SWEEP_DIR=outputs/sweeps/<experiment>), or wait for the sweeper "
              "to write its plan", file=sys.stderr)
        return 2
    if args.watch is None:
        print(render(args.sweep_dir, sweep_status(args.sweep_dir)))
        return 0
    try:
        while True:
            screen = render(args.sweep_dir, sweep_status(args.sweep_dir))
            print("\033[H\033[J" + screen, flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
