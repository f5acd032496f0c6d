"""A checkpoint on request: at SLURM's time-limit or preemption warning, and every `train.checkpoint_every_min`.

SLURM warns a job with SIGUSR2 (`hydra.launcher.signal_delay_s` before its time limit, or before it is
preempted). submitit's handler, in the Hydra job's process, calls the submitted callable's `checkpoint`
method and then requeues the job and exits. The launcher's `checkpoint` (sweep/submitit_launchers.py)
calls `request_save` here: it writes a request file into the running job's run directory and waits until
the job has saved. The job's training (a job runner, or every torchrun worker) sees the request at its next
step boundary through `SaveOnRequest` (trainers/job/callbacks.py), which makes the Trainer save a complete
checkpoint there, answers, and holds the job until the requeue ends it: training on would only do work that the
requeued job redoes.

Every rank must save at the same step (a ZeRO-3 or FSDP save is collective), so on several processes the
decision to save is all-reduced at each step end: rank 0's view of the request file and its clock win.
This module is the protocol and the launcher's side: it imports no torch, as the launcher's process has none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from trainers.runtime.run_dir import atomic_write_json

log = logging.getLogger(__name__)

REQUEST = ".save_request"  # written by the job's Hydra process when the scheduler warns it
SAVED = ".save_done"  # written by rank 0 once the requested checkpoint is complete: {"step": ...}
HOLD_S = 900.0  # after a requested save, how long training waits for the requeue to end it before going on

_active: list[Path] = []  # the run directory of the job this process is running (its Hydra job)


@contextlib.contextmanager
def serving_save_requests(run_dir: Path) -> Iterator[None]:
    """While the job of `run_dir` runs in this process (or its runner, or its workers), a warning of the
    scheduler asks it for a checkpoint (`request_save`)."""
    run_dir = Path(run_dir).resolve()
    (run_dir / REQUEST).unlink(missing_ok=True)
    (run_dir / SAVED).unlink(missing_ok=True)
    _active.append(run_dir)
    try:
        yield
    finally:
        _active.remove(run_dir)


def request_save(timeout_s: float, poll_s: float = 0.2) -> int | None:
    """Ask the running job for a checkpoint now and wait for it (at most `timeout_s`); the step it saved at,
    or None when no job runs here or none was saved in time (the requeued job then resumes from its last
    periodic checkpoint, if any)."""
    if not _active:
        return None
    run_dir = _active[-1]
    (run_dir / SAVED).unlink(missing_ok=True)
    atomic_write_json(run_dir / REQUEST, {"requested_at": time.time()})
    log.warning("The scheduler warned this job (time limit or preemption): asking it for a checkpoint")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            step = int(json.loads((run_dir / SAVED).read_text())["step"])
            log.warning("The job saved a checkpoint at step %d before its requeue", step)
            return step
        time.sleep(poll_s)
    log.warning("The job saved no checkpoint within %.0f s of the warning", timeout_s)
    return None
