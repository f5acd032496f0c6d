"""Jobs of a sweep in a child process, so that a job's death is a recorded failure, not the sweep's end.

Inside a sweep a job runs in the launcher's process: the sweeper itself (local launcher) or a joblib
worker, whose pool terminates every worker when one dies. A job killed there (the kernel's OOM killer
sends SIGKILL to the biggest process) would take the sweeper, or its sibling jobs, with it. Run in a
child, only the child dies: this process writes `result.json` as `failed` with the reason in words
(`killed by signal 9 (SIGKILL: out of memory?)`), and the launcher goes on with the other jobs.

The child is a runner that lives as long as this process and runs one job after another, so a job
costs what it cost in-process (Python, torch and the lazily imported model code are loaded once per
runner, W&B's service is started once), not a fresh interpreter's ten seconds. It is forked from a
forkserver that has imported the job's module, never from this process, so no OpenMP state of this
process leaks into it (a forked child of a process that ran torch ops can hang), and it starts the
same way inside a joblib worker. A runner that died is replaced for the next job. The child logs to this process's log
file and console, in the same format.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainers.job.console import quiet_console
from trainers.job.result import failed_result
from trainers.runtime.run_dir import FAILED, RESULT, atomic_write_json, read_result

log = logging.getLogger(__name__)

LogTargets = list[tuple[str, str, str]]  # (kind, where, format) of each root log handler


class JobDied(RuntimeError):
    """The job's process ended without a result of its own (a signal, a hard exit); recorded as failed."""


def death_reason(exitcode: int | None) -> str:
    """A child's end in words: `killed by signal 9 (SIGKILL: out of memory?)`, `exit code 3`."""
    if exitcode is None:
        return "ended with no exit status"
    if exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = ": out of memory?" if sig == signal.SIGKILL else ""
        return f"killed by signal {sig} ({name}{hint})"
    return f"exit code {exitcode}"


def _log_targets() -> LogTargets:
    """Where this process's root logger writes, for the child to write there too, the same way."""
    targets = []
    for handler in logging.getLogger().handlers:
        fmt = handler.formatter._fmt if handler.formatter is not None else "%(message)s"
        if isinstance(handler, logging.FileHandler):
            targets.append(("file", handler.baseFilename, fmt))
        elif isinstance(handler, logging.StreamHandler):
            targets.append(("stream", "stderr" if handler.stream is sys.stderr else "stdout", fmt))
    return targets


def _log_to(targets: LogTargets) -> None:
    """Replace the root logger's handlers with `targets` (each job has its own log file). A line that cannot be
    written (a full disk) is dropped, not a traceback on the console for every line (W&B's too)."""
    logging.raiseExceptions = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    for kind, where, fmt in targets:
        handler = logging.FileHandler(where, mode="a") if kind == "file" else \
            logging.StreamHandler(sys.stderr if where == "stderr" else sys.stdout)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the forkserver, which ends with the launcher's process)
    dies, so that a killed launcher leaves no job behind to write a result nobody collects."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _watch_launcher(conn: Connection, job_done: threading.Event) -> None:
    """While a job runs, end this runner (SIGKILL) within a second of its launcher's process ending.

    The launcher's process sends nothing while it waits for a job, so its end of the pipe turns readable
    only when that process is gone (a killed joblib worker, a killed sweeper). Dying with the forkserver
    is not enough: it can outlive the launcher, and the job would run on with nobody to collect it.
    """
    while not job_done.wait(1.0):
        if conn.poll(0):
            os.kill(os.getpid(), signal.SIGKILL)


def _serve(conn: Connection) -> None:
    """The runner: run each job it is sent, send back ("returned", result) or ("raised", exception), until told
    to stop."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in a terminal ends it with its parent
    # The job ends when its parent says so (it SIGKILLs the runner) or dies (PDEATHSIG), never by a
    # signal sent to the whole job: SLURM's SIGTERM before a requeue or a cancel, and its time-limit
    # warning (SIGUSR2), are for the launcher's process, which must not see its job die and record it
    # as failed while the scheduler is ending (or requeueing) both.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        target, resolved, targets, quiet = task
        _log_to(targets)
        job_done = threading.Event()
        watchdog = threading.Thread(target=_watch_launcher, args=(conn, job_done), daemon=True)
        watchdog.start()
        try:
            module, name = target.split(":")
            job = getattr(importlib.import_module(module), name)
            with quiet_console(quiet):
                reply = ("returned", job(OmegaConf.create(resolved)))
        except Exception as exc:  # the job recorded what it could; the parent re-raises
            reply = ("raised", exc)
        finally:
            job_done.set()
            watchdog.join()
        try:
            conn.send(reply)
        except Exception:  # a result or an exception that does not pickle
            conn.send(("raised", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


class _Runner:
    """A child process that runs jobs one after another."""

    def __init__(self, preload: str) -> None:
        ctx = multiprocessing.get_context("forkserver")
        # The forkserver imports this process's main module by itself (`python -m trainers.train`):
        # preloading it as well would import it twice.
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        again = main is not None and main.name == preload
        ctx.set_forkserver_preload(["trainers.job.forkserver_setup"] + ([] if again else [preload]))
        self.conn, child_conn = ctx.Pipe()
        # a daemon: multiprocessing ends it when this process exits (after _close_runner has asked it to)
        self.process = ctx.Process(target=_serve, args=(child_conn,), name="sftsweep-job-runner", daemon=True)
        # The child re-applies this process's default start method; a joblib worker's is "loky", which a
        # plain interpreter does not know. Give it the runner's own while it starts.
        previous = multiprocessing.get_start_method(allow_none=True)
        multiprocessing.set_start_method("forkserver", force=True)
        try:
            self.process.start()
        finally:
            multiprocessing.set_start_method(previous, force=True)
        child_conn.close()

    def run(self, task: tuple) -> tuple[str, Any]:
        """("returned", result) or ("raised", exception) from the child, or ("died", exit code) if it died."""
        try:
            self.conn.send(task)
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.process.join()
            return "died", self.process.exitcode

    def stop(self) -> None:
        self.process.kill()  # SIGKILL: the runner ignores SIGTERM
        self.process.join(timeout=30)

    def close(self) -> None:
        """Let the runner finish (at this process's exit): it has no job, so it ends at once."""
        try:
            self.conn.send(None)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.process.join(timeout=30)


_runner: _Runner | None = None


def _close_runner() -> None:
    if _runner is not None:
        _runner.close()


# Run at this process's exit by multiprocessing itself, before it terminates (SIGTERM, which the runner
# ignores) and joins its daemonic children: also in a joblib worker, which never runs atexit.
multiprocessing.util.Finalize(None, _close_runner, exitpriority=10)


def run_isolated(target: str, cfg: DictConfig, quiet: bool = False) -> Any:
    """`job(cfg)` in this process's job runner, `target` naming the job as "module:function" (by name: the
    caller may be running as `__main__`); its return value, or its exception re-raised here.

    A runner that dies without a word (a signal, a hard exit) leaves `result.json` saying `failed` with
    the reason (unless the job had written a result already), and `JobDied` is raised, as a job's own
    failure raises. The config is resolved here, where Hydra's `${hydra:...}` interpolations resolve.
    """
    global _runner
    if _runner is None or not _runner.process.is_alive():
        _runner = _Runner(preload=target.split(":")[0])
    task = (target, OmegaConf.to_container(cfg, resolve=True), _log_targets(), quiet)
    with noting_sigterm() as ending:
        try:
            kind, payload = _runner.run(task)
        except BaseException:  # Ctrl-C or SIGTERM of this process: the job goes with it
            _runner.stop()
            _runner = None
            raise
        if kind != "returned" and ending.is_set():
            await_the_end()
    if kind == "returned":
        return payload
    if kind == "raised":
        raise payload
    pid, _runner = _runner.process.pid, None
    reason = death_reason(payload)
    log.error("Job process %s %s", pid, reason)
    run_dir = Path(cfg.run_dir)
    written = read_result(run_dir)
    if written is not None and written.get("status") != FAILED:
        return written  # it died after its result was complete: nothing was lost
    atomic_write_json(run_dir / RESULT, failed_result(cfg, reason))
    raise JobDied(reason)


@contextlib.contextmanager
def noting_sigterm() -> Iterator[threading.Event]:
    """While a job runs, remember whether this process got SIGTERM, then do what was done before (raise
    in a sweeper, ignore under submitit, end the process by default)."""
    ending = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield ending
        return
    previous = signal.getsignal(signal.SIGTERM)

    def note(signum: int, frame: Any) -> None:
        ending.set()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default: end this process, as it would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, note)
    try:
        yield ending
    finally:
        signal.signal(signal.SIGTERM, previous)


def await_the_end() -> None:
    """The scheduler is ending this job (SIGTERM, then SIGKILL: a cancel, a requeue, the time limit) and the
    job failed meanwhile (W&B's service, say, died of that SIGTERM). Report nothing: a result written now
    would be taken for the job's end, and a requeued job would never run again. Wait for the SIGKILL."""
    log.warning("The scheduler is ending this job (SIGTERM); its failure meanwhile is not reported")
    while True:
        signal.pause()
