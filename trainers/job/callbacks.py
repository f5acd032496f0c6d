"""What a running job tells its run directory: step logs at the Trainer's own cadence, evaluations and the
cheaper selection reports (`train.report_steps`), and progress.json; and the one thing it reads back from
it: a sweeper's request to stop.

progress.json says who runs the job (process, host, SLURM job) and how far it is (phase, step of
max_steps, last loss); the status view and the sweeper read it to tell a running job from a dead one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import TrainerCallback

from trainers.job.result import slurm_job_id
from trainers.job.save_request import HOLD_S, REQUEST, SAVED
from trainers.runtime.collectives import broadcast_from_main, dist_ready
from trainers.runtime.process import is_main_process
from trainers.runtime.run_dir import (
    EVAL,
    METRICS,
    PROGRESS,
    append_jsonl,
    atomic_write_json,
    read_stop_request,
    write_progress,
)

_TRAIN_KEYS = {"loss": "loss", "m_theta": "m_theta", "learning_rate": "lr", "grad_norm": "grad_norm",
               "tokens_per_s": "tokens_per_s", "minor_coef": "minor_coef", "epoch": "epoch"}

log = logging.getLogger(__name__)


def mark_started(cfg: DictConfig, run_dir: Path) -> None:
    """A fresh progress.json for a job that has just started (rank 0): who runs it, where, since when."""
    (Path(run_dir) / PROGRESS).unlink(missing_ok=True)
    max_steps = int(cfg.train.max_steps)
    write_progress(run_dir, pid=os.getpid(), host=socket.gethostname(), slurm_job_id=slurm_job_id(),
                   started_at=time.time(), phase="preparing", step=0,
                   max_steps=max_steps if max_steps > 0 else None, loss=None)


class RunDirCallback(TrainerCallback):
    """metrics.jsonl gets a line per training log, eval.jsonl a line per evaluation; progress.json follows."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_progress(self.run_dir, phase="training", step=state.global_step, max_steps=state.max_steps,
                           train_started_at=time.time(), train_start_step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            row = {"step": state.global_step}
            row.update({out: logs[key] for key, out in _TRAIN_KEYS.items() if key in logs})
            append_jsonl(self.run_dir / METRICS, row)
            write_progress(self.run_dir, step=state.global_step, loss=logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            append_jsonl(self.run_dir / EVAL, {
                "step": state.global_step,
                "accuracy": metrics["eval_accuracy"],
                "select_accuracy": metrics.get("eval_select_accuracy"),
                "select_n": metrics.get("eval_select_n"),  # how sure an early-stopping comparison can be
                "m_theta": metrics.get("eval_m_theta"),
                "n": metrics["eval_n"],
            })

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_progress(self.run_dir, phase="evaluating", step=state.global_step)


class ReportSelection(TrainerCallback):
    """Every `every` steps, the selection split's accuracy alone into eval.jsonl (`report`: the trainer's
    `report_selection`), so that a pruner or early stopping can judge a job between its full evaluations.

    Skipped at a step that evaluates anyway or ends training. Every rank runs it (the scoring pass is
    sharded); rank 0 writes the row.
    """

    def __init__(self, run_dir: Path, every: int, report: Callable[[], dict[str, Any] | None]):
        self.run_dir, self.every, self.report = Path(run_dir), int(every), report

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if not self.every or step % self.every or control.should_training_stop:
            return control
        if args.eval_strategy == "steps" and args.eval_steps and step % args.eval_steps == 0:
            return control  # the evaluation at this step writes the same numbers and more
        row = self.report()
        if row is not None and state.is_world_process_zero:
            append_jsonl(self.run_dir / EVAL, row)
        return control


class StopOnRequest(TrainerCallback):
    """Ends training after the step during which a sweeper asked it to (run_dir.STOP_REQUEST): no final
    evaluation, no checkpoint. `request` then holds the request and the step it took effect at.

    Rank 0 looks (one open of an absent file per step: the sweeper's channel works on any shared
    filesystem) and broadcasts what it saw, so that every rank stops after the same step.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.request: dict | None = None

    def on_step_end(self, args, state, control, **kwargs):
        request = broadcast_from_main(read_stop_request(self.run_dir) if is_main_process() else None)
        if request:
            self.request = {**request, "step": state.global_step}
            control.should_training_stop = True
            control.should_evaluate = control.should_save = False
        return control


class SaveOnRequest(TrainerCallback):
    """Save at the step boundary after a request (`request_save`), or after `every_min` minutes without a
    save (0: never); after a requested save, answer and hold until the requeue ends the job."""

    def __init__(self, run_dir: Path, every_min: float = 0.0, hold_s: float = HOLD_S):
        self.run_dir, self.every_s, self.hold_s = Path(run_dir).resolve(), float(every_min) * 60.0, hold_s
        self.last_save = time.monotonic()
        self.requested = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        wanted = 0
        if is_main_process():
            if (self.run_dir / REQUEST).exists():
                wanted = 2
            elif self.every_s and time.monotonic() - self.last_save >= self.every_s:
                wanted = 1
        if dist_ready():  # every rank saves at the same step, or a collective save deadlocks
            flag = torch.tensor([wanted], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            wanted = int(flag.item())
        if wanted:
            control.should_save = True
            self.requested = self.requested or wanted == 2
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()
        if not self.requested:
            return control
        self.requested = False
        if is_main_process():
            (self.run_dir / REQUEST).unlink(missing_ok=True)
            atomic_write_json(self.run_dir / SAVED, {"step": state.global_step})
            log.warning("Saved checkpoint-%d on the scheduler's warning; waiting for the requeue", state.global_step)
        held = time.monotonic() + self.hold_s
        while time.monotonic() < held:
            time.sleep(1.0)
        log.warning("No requeue came within %.0f s of the requested checkpoint; training on", self.hold_s)
        return control
