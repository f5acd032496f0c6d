"""While a grid's jobs train, read their curves and stop the points the early-stopping rule condemns.

The grid sweeper's counterpart of `sweep.pruning.PruningMonitor`: a thread beside the launch that reads
every point's eval.jsonl (through the same reader), applies `sweep.early_stop.to_stop`, and writes the
stop request (trainers/runtime/run_dir.py) for each condemned running point; the job ends `stopped` after
its next step. Points that finished before this launch (the grid's, when refinement launches) count as
evidence, never as candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sweep.early_stop import EarlyStopSpec, Eval, to_stop
from sweep.grid import GridPoint
from sweep.pruning import RunDirPoller, intermediate_rows, still_training
from trainers.runtime.run_dir import STOP_STATUSES, STOPPED, read_result, request_stop


class EarlyStopMonitor(RunDirPoller):
    """Used as a context manager around a launch of `points[i] for i in pending`."""

    thread_name = "grid-early-stop"

    def __init__(self, points: Sequence[GridPoint], run_dirs: Sequence[Path], pending: Sequence[int],
                 spec: EarlyStopSpec, interval_s: float):
        super().__init__(interval_s)
        self.points, self.run_dirs = list(points), [Path(d) for d in run_dirs]
        self.pending, self.spec = set(pending), spec
        self.since = time.time()
        self.stopped = {p for i, (p, d) in enumerate(zip(self.points, self.run_dirs, strict=True))
                        if i not in self.pending and (read_result(d) or {}).get("status") in STOP_STATUSES}
        self.requested: dict[GridPoint, str] = {}

    def tick(self) -> None:
        self.poll()

    def poll(self) -> None:
        """One look at every curve; a stop request for each running point the rule condemns."""
        curves: dict[GridPoint, dict[int, Eval]] = {}
        running = []
        for i, (p, d) in enumerate(zip(self.points, self.run_dirs, strict=True)):
            rows = intermediate_rows(d, self.since if i in self.pending else 0.0)
            curves[p] = {r["step"]: Eval(float(r["select_accuracy"]), int(r.get("select_n") or 0))
                         for r in rows if r.get("select_n")}
            if i in self.pending and p not in self.requested and curves[p] and still_training(d, max(curves[p])):
                running.append(p)
        decisions = to_stop(curves, running, self.stopped | set(self.requested), self.spec)
        index = {p: i for i, p in enumerate(self.points)}
        for p, reason in decisions.items():
            request_stop(self.run_dirs[index[p]], STOPPED, reason)
            self.requested[p] = reason
            print(f"[sweep] {p.label()}: asked to stop ({reason})", flush=True)
