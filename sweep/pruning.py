"""Optuna pruning through the run directories: the sweeper's channel to trials that are still training.

A trial is a Hydra job (maybe a SLURM task on another node) whose only return channel through the
launcher is its final value. But every job appends its intermediate selection-split accuracy to its run
directory's eval.jsonl, and reads a stop request from it at every step (trainers/runtime/run_dir.py),
on any filesystem the sweeper shares with it. `PruningMonitor` runs beside the launch: it reports each
new intermediate value to the study (`trial.report`), asks the study's pruner (`trial.should_prune`),
and writes the stop request for a trial it should prune; the job then ends as `pruned`, and the sweeper
tells the study PRUNED.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import optuna

from trainers.runtime.run_dir import EVAL, PRUNED, read_jsonl, read_progress, request_stop

CLOCK_SLACK_S = 2.0  # file times on a shared filesystem come from its server's clock


class RunDirPoller:
    """A thread beside a launch (a context manager around it) that calls `tick()` every `interval_s`, and
    `finish()` once the launch has returned: the sweepers' way of watching jobs through their run directories."""

    thread_name = "run-dir-poller"

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.finish()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the launch: nothing, unless a poller needs a last look."""


class PruningMonitor(RunDirPoller):
    """While a batch of trials runs, report their intermediate values and stop the ones to prune.

    Used as a context manager around the launch; on exit it reports the values written since the last
    poll (a finished trial's curve must be whole for the pruner to judge later trials by it).
    """

    thread_name = "optuna-pruning"

    def __init__(self, trials: Sequence[optuna.trial.Trial], run_dirs: Sequence[Path], since: float,
                 interval_s: float, prune: bool):
        super().__init__(interval_s)
        self.trials, self.run_dirs, self.since = list(trials), [Path(d) for d in run_dirs], since
        self.prune = prune
        self.reported: dict[int, set[int]] = {t.number: set() for t in self.trials}
        self.stop_requested: dict[int, int] = {}  # trial number -> the step at which it was asked to stop

    def tick(self) -> None:
        self.poll(decide=self.prune)

    def finish(self) -> None:
        self.poll(decide=False)

    def poll(self, decide: bool) -> None:
        """Report every new intermediate value; with `decide`, ask the pruner about each trial that got one."""
        for trial, run_dir in zip(self.trials, self.run_dirs, strict=True):
            new = self._report_new(trial, run_dir)  # also after a stop request: the study holds what the job logged
            if trial.number in self.stop_requested:
                continue
            if new is not None and decide and self._still_training(run_dir, new) and trial.should_prune():
                request_stop(run_dir, PRUNED, f"{type(trial.study.pruner).__name__}: selection accuracy "
                                              f"at step {new} below the study's rule")
                self.stop_requested[trial.number] = new
                print(f"[optuna] trial {trial.number} {trial.params}: asked to stop at step {new} (pruned)",
                      flush=True)

    def _report_new(self, trial: optuna.trial.Trial, run_dir: Path) -> int | None:
        """Report the eval.jsonl rows of this launch not yet reported; the last new step, or None."""
        last = None
        for row in intermediate_rows(run_dir, self.since):
            step = row["step"]
            if step not in self.reported[trial.number]:
                trial.report(float(row["select_accuracy"]), step)
                self.reported[trial.number].add(step)
                last = step
        return last

    @staticmethod
    def _still_training(run_dir: Path, step: int) -> bool:
        return still_training(run_dir, step)


def intermediate_rows(run_dir: Path, since: float = 0.0) -> list[dict]:
    """A job's eval.jsonl rows during training (step > 0, with a selection accuracy), in order; none when the
    log predates `since` (an earlier run's log, before this job reset it). The one reader of running jobs'
    curves, for Optuna pruning and grid early stopping (sweep/early_stop.py)."""
    eval_log = Path(run_dir) / EVAL
    try:
        if eval_log.stat().st_mtime < since - CLOCK_SLACK_S:
            return []
    except FileNotFoundError:
        return []
    return [row for row in read_jsonl(eval_log)
            if row.get("step", 0) > 0 and row.get("select_accuracy") is not None]


def still_training(run_dir: Path, step: int) -> bool:
    """Stopping makes sense only before the last step (the final evaluation is the run's value)."""
    progress = read_progress(run_dir) or {}
    max_steps = progress.get("max_steps")
    return progress.get("phase") == "training" and (not max_steps or step < int(max_steps))
