"""Launch a batch of jobs through any Hydra launcher so that no job's death ends the sweep.

A job can end without a result of its own: killed by the OOM killer, cancelled (`scancel`), lost with
its node, or taken down with a joblib worker pool that broke when another worker died. Whatever the
launcher, `launch_recorded` then writes that job's `result.json` as `failed` with the reason in words,
relaunches the jobs that never started, and returns one `JobReturn` per job, so the sweeper can go on
to refinement, the summary and the report. What happened is read from the run directories
(`progress.json` says a job started, `result.json` how it ended) and from the launcher's own words.
"""

from __future__ import annotations

import errno
import re
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

from trainers.job.result import failed_result
from trainers.runtime import lifeline
from trainers.runtime.disk import no_space
from trainers.runtime.run_dir import FAILED, RESULT, atomic_write_json, config_hash, read_progress, read_result


def job_identity(job_cfg: DictConfig) -> tuple[Path, str]:
    """(run directory, config hash) of a composed job config, as the job itself will see them."""
    HydraConfig.instance().set_config(job_cfg)  # its paths read ${hydra:runtime.cwd}
    return Path(job_cfg.hydra.sweep.dir) / job_cfg.hydra.sweep.subdir, config_hash(job_cfg)


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler or `kill` stopping the sweeper) acts as Ctrl-C: the launchers stop their jobs
    (local, joblib) or cancel them (submitit) instead of leaving them running with nobody to collect them.
    A SIGKILL allows no handler: every process started from here on ends with this one
    (trainers/runtime/lifeline.py)."""
    lifeline.bind()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def launcher_failure(exc: BaseException) -> str:
    """What a launcher's own exception says happened to its jobs, in one line."""
    text = str(exc)
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", text)
    if codes:  # joblib/loky: the pool broke because a worker process died
        hint = ": out of memory?" if "SIGKILL" in codes.group(1) else ""
        return f"its joblib worker pool broke when a worker died ({codes.group(1)}{hint})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class EndedByLauncher(RuntimeError):
    """Why the launcher or its scheduler ended a job (cancelled, out of memory, node failure): the root
    cause, recorded even over what the dying job wrote about itself."""


def failed_return(overrides: Sequence[str], reason: str) -> JobReturn:
    """A `JobReturn` for a job its launcher ended: FAILED, its return value the reason."""
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=EndedByLauncher(reason))


CLOCK_SLACK_S = 2.0  # file times on a shared filesystem come from its server's clock


def ended_since(run_dir: Path, since: float) -> bool:
    """The job wrote a result.json during this launch (after `since`), whatever its status."""
    path = Path(run_dir) / RESULT
    return read_result(run_dir) is not None and path.stat().st_mtime >= since - CLOCK_SLACK_S


def started_since(run_dir: Path, since: float) -> bool:
    """The job began at or after `since`: its progress.json is from this launch."""
    progress = read_progress(run_dir)
    return bool(progress) and float(progress.get("started_at", 0.0)) >= since - CLOCK_SLACK_S


def record_failed(job_cfg: DictConfig, run_dir: Path, reason: str) -> None:
    """`result.json` says `failed` with the reason, for a job that could not write one itself."""
    HydraConfig.instance().set_config(job_cfg)  # its config hash reads ${hydra:runtime.cwd}
    atomic_write_json(Path(run_dir) / RESULT, failed_result(job_cfg, reason))


def launch_recorded(launcher: Launcher, jobs: list[list[str]], job_cfgs: list[DictConfig], run_dirs: list[Path],
                    initial_job_idx: int) -> list[JobReturn]:
    """`launcher.launch(jobs)` that always returns one `JobReturn` per job and leaves every job a result.

    When the launcher raises (it cannot collect some job), the jobs that started and left no result are
    recorded failed with the launcher's reason, and the ones that never started are launched again, as
    long as each attempt starts at least one of them. Afterwards every job without a result from this
    launch is recorded failed: with its own error when it returned one, else as ended without a result.

    A full disk (a job's error, the launcher's, or this recording's own write) stops the launching: what can
    be recorded is, then OSError(ENOSPC) is raised for the sweeper to say so in one line.
    """
    returns: dict[int, JobReturn] = {}
    todo, job_idx, full = list(range(len(jobs))), initial_job_idx, False
    since = time.time()
    while todo:
        attempt_started = time.time()
        try:
            rets = launcher.launch([jobs[i] for i in todo], initial_job_idx=job_idx)
        except Exception as exc:
            reason = launcher_failure(exc)
            if no_space(exc):  # every job after it would fail the same way
                returns.update({i: failed_return(jobs[i], reason) for i in todo})
                full, todo = True, []
                continue
            print(f"[sweep] the launcher lost jobs: {reason}; recording them and going on", flush=True)
            started = [i for i in todo
                       if started_since(run_dirs[i], attempt_started) or ended_since(run_dirs[i], since)]
            for i in started:
                returns[i] = failed_return(jobs[i], reason)
            never = [i for i in todo if i not in started]
            if not started:  # nothing ran at all: this launcher cannot run these jobs
                for i in never:
                    returns[i] = failed_return(jobs[i], f"never started: {reason}")
                never = []
            job_idx += len(todo)
            todo = never
            continue
        returns.update(dict(zip(todo, rets, strict=True)))
        todo = []
    for i, run_dir in enumerate(run_dirs):
        ret = returns[i]
        ended_by_launcher = ret.status == JobStatus.FAILED and isinstance(ret._return_value, EndedByLauncher)
        if ended_since(run_dir, since):
            written = read_result(run_dir) or {}
            if not (ended_by_launcher and written.get("status") == FAILED):
                continue  # its own result stands; a job that died says less about why than its scheduler
        if ret.status == JobStatus.FAILED:
            reason = str(ret._return_value).strip().splitlines()[0] if str(ret._return_value).strip() else FAILED
        else:
            reason = "ended without a result.json"
        full = full or (ret.status == JobStatus.FAILED and no_space(ret._return_value))
        try:
            record_failed(job_cfgs[i], run_dir, reason)
        except OSError as exc:
            if not no_space(exc):
                raise
            full = True
    if full:
        raise OSError(errno.ENOSPC, "No space left on device")
    return [returns[i] for i in range(len(jobs))]
