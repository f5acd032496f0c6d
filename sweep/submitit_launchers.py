"""hydra-submitit-launcher's launchers (local and SLURM), with every job's end collected on its own.

The library's `launch()` waits for its jobs in order and raises at the first one that ended without a
result (cancelled, out of memory, lost with its node: submitit's `UncompletedJobError`), which ended the
sweep and left the other jobs running on the cluster with nobody to collect them. Here every job is
waited for, and one that the scheduler ended (it left no result, or its state says cancelled, out of
memory, node failure, time limit) comes back as a FAILED `JobReturn` naming that state
(`SLURM: OUT_OF_MEMORY`), which the sweeper records in its run directory.
When the sweeper is stopped while it waits (Ctrl-C, SIGTERM), it cancels the jobs it submitted that
have not finished, and says which.

At SLURM's warning of the time limit or a preemption (SIGUSR2, `signal_delay_s` before), submitit calls
the job's `checkpoint` method before it requeues the job: here that first asks the running job for a
checkpoint and waits for it (trainers/job/save_request.py), so the requeued job resumes from that step.

Selected by `conf/launcher/slurm.yaml` and `submitit_local.yaml` (`hydra.launcher._target_`); the
executor, its parameters and the requeue on timeout are the library's own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from sweep.launching import failed_return
from trainers.job.plan import save_window_s
from trainers.job.save_request import request_save

STATE_HINTS = {
    "OUT_OF_MEMORY": "the job went over its memory request",
    "NODE_FAIL": "its node failed",
    "CANCELLED": "scancel, or an administrator",
    "TIMEOUT": "over its time limit",
    "PREEMPTED": "preempted",
    "INTERRUPTED": "its process was killed by a signal",  # submitit-local
}


def uncompleted_reason(scheduler: str, state: str, error: BaseException) -> str:
    """`SLURM: OUT_OF_MEMORY (the job went over its memory request)`: the scheduler's state now, else the one
    submitit's error names (`... has not produced any output (state: CANCELLED by 0)`), else its words."""
    state = (state or "").strip()
    if not state or state in ("UNKNOWN", "FINISHED", "COMPLETED", "RUNNING"):
        named = re.search(r"\(state: ([^)]*)\)", str(error))
        state = named.group(1).strip() if named else ""
    if not state:
        message = str(error).strip().splitlines()
        return f"{scheduler}: ended without a result ({message[0] if message else type(error).__name__})"
    hint = STATE_HINTS.get(state.split()[0])
    return f"{scheduler}: {state}" + (f" ({hint})" if hint else "")


class _Collected:
    """A submitted job whose `results()` gives a FAILED `JobReturn` where submitit would raise."""

    def __init__(self, job: Any, overrides: Sequence[str], scheduler: str):
        self.job, self.overrides, self.scheduler = job, overrides, scheduler

    def results(self) -> list[JobReturn]:
        """The job's own return, unless the scheduler ended it (then its reason, even when the dying job
        managed to return something: a cancelled job's runner reports only that its process vanished)."""
        from submitit.core.utils import UncompletedJobError

        try:
            returns = self.job.results()
        except UncompletedJobError as exc:
            return [failed_return(self.overrides, uncompleted_reason(self.scheduler, self._state(), exc))]
        state = self._state()
        if state.split()[:1] and state.split()[0] in STATE_HINTS:
            return [failed_return(self.overrides, uncompleted_reason(self.scheduler, state, RuntimeError(state)))]
        return returns

    def _state(self) -> str:
        """The scheduler's state of the job now (a fresh sacct call; the watcher's cache lags behind)."""
        try:
            info = self.job.get_info(mode="force")
        except Exception:  # the scheduler cannot be asked (no accounting): the error says what it knows
            return ""
        return str(info.get("State") or info.get("jobState") or "")


class CollectingLauncherMixin:
    """`launch()` of the library's launcher, with each job's results collected as `_Collected` does; on the
    scheduler's warning, `checkpoint()` has the job save before it is requeued."""

    _EXECUTOR: str
    SCHEDULER = "submitit"
    params: dict[str, Any]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """In the job's process, at SIGUSR2: a checkpoint of the running job (waiting at most the warning's lead
        less what the requeue needs, `save_window_s`, so that the requeue comes before the kill), then the
        library's requeue of the same call."""
        request_save(timeout_s=save_window_s(float(self.params.get("signal_delay_s") or 120)))
        return super().checkpoint(*args, **kwargs)  # type: ignore[misc]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        submitted: list[Any] = []
        try:
            with self._collecting(submitted):
                return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        except KeyboardInterrupt:
            unfinished = [job for job in submitted if not job.done()]
            for job in unfinished:
                job.cancel(check=False)
            if unfinished:
                print(f"[sweep] stopped: cancelled {len(unfinished)} unfinished {self.SCHEDULER} job(s): "
                      f"{', '.join(str(job.job_id) for job in unfinished)}", flush=True)
            raise

    @contextmanager
    def _collecting(self, submitted: list[Any]):
        """While the library's launch() runs, its executor's map_array hands back `_Collected` jobs."""
        import submitit

        original = submitit.AutoExecutor.map_array
        scheduler = self.SCHEDULER

        def map_array(executor: Any, fn: Any, *iterables: Any) -> list[_Collected]:
            jobs = original(executor, fn, *iterables)
            submitted.extend(jobs)
            return [_Collected(job, overrides, scheduler) for job, overrides in zip(jobs, iterables[0], strict=True)]

        submitit.AutoExecutor.map_array = map_array
        try:
            yield
        finally:
            submitit.AutoExecutor.map_array = original


class LocalLauncher(CollectingLauncherMixin, BaseSubmititLauncher):
    _EXECUTOR = "local"
    SCHEDULER = "submitit-local"


class SlurmLauncher(CollectingLauncherMixin, BaseSubmititLauncher):
    _EXECUTOR = "slurm"
    SCHEDULER = "SLURM"

    def fill_request(self, request: dict[str, int]) -> dict[str, int]:
        """Set the resource fields the user left null (conf/launcher/slurm.yaml) to the resource plan's
        `request`; returns the request every job of the array gets."""
        for key, value in request.items():
            if self.params.get(key) is None:
                self.params[key] = value
        return {key: self.params[key] for key in request}
