"""One grid point on N processes: the Hydra job is the agent, torch's elastic launcher starts the workers.

With `strategy.nproc_per_node × strategy.nnodes > 1` the Hydra job (whatever launcher ran it: local,
joblib, submitit, SLURM) writes the resolved config once to `<run_dir>/.distributed/job.yaml` and
hands it to `torch.distributed.run` (standalone rendezvous on one node; a c10d rendezvous on the
first host of a SLURM allocation, one agent task per node). torchrun starts `trainers.worker` on each
rank **by module name**: this module never imports the job it launches. Rank 0 alone writes the run
directory, W&B and result.json; a worker that dies takes the others down with it (torchelastic stops
the group), and the agent records the job as failed.

    python -m trainers.train strategy=ddp strategy.nproc_per_node=2      # the agent
    python -m trainers.worker <run_dir>/.distributed/job.yaml          # what each worker runs
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainers.job.arguments import accelerate_on_cpu
from trainers.job.config import save_job_config
from trainers.job.isolate import await_the_end, noting_sigterm
from trainers.job.result import failed_result
from trainers.runtime.errors import ConfigError
from trainers.runtime.process import planned_world_size
from trainers.runtime.run_dir import FAILED, RESULT, atomic_write_json, read_result

log = logging.getLogger(__name__)

WORKER = ("--module", "trainers.worker")
TORCH_SIGNALS = "TORCHELASTIC_SIGNALS_TO_HANDLE"  # read by torch's elastic agent when it starts the workers


def slurm_first_host(nodelist: str) -> str:
    """The allocation's first host (SLURM_JOB_NODELIST is compressed, e.g. gpu[03-04])."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def torchrun_argv(cfg: DictConfig, config_path: Path, env: dict[str, str] | None = None,
                  worker: tuple[str, ...] = WORKER, quiet: bool = False) -> list[str]:
    """torch.distributed.run's arguments: standalone on one node, c10d on the first SLURM host across nodes.

    Every rank's output goes to `<run_dir>/.distributed/logs/`; the console shows rank 0's, or (`quiet`,
    inside a sweep) none: the job's end line and errors still come from the agent.
    """
    env = dict(os.environ) if env is None else env
    s = cfg.strategy
    argv = ["--nproc_per_node", str(s.nproc_per_node), "--max_restarts", "0", "--monitor_interval", "1",
            "--log_dir", str(Path(config_path).parent / "logs"), "--redirects" if quiet else "--tee", "3"]
    if not quiet:
        argv += ["--local_ranks_filter", "0"]
    if int(s.nnodes) == 1:
        argv += ["--standalone", "--nnodes", "1"]
    else:
        if "SLURM_JOB_ID" not in env:
            raise ConfigError(f"strategy.nnodes={s.nnodes} needs a SLURM allocation "
                              "(launcher=slurm: one task per node)")
        if int(env.get("SLURM_NNODES", "1")) != int(s.nnodes):
            raise ConfigError(f"strategy.nnodes={s.nnodes} but the SLURM job has {env.get('SLURM_NNODES')} nodes; "
                              "set hydra.launcher.nodes to the same number")
        host = env.get("SFTSWEEP_RDZV_HOST") or slurm_first_host(env["SLURM_JOB_NODELIST"])
        argv += ["--nnodes", str(s.nnodes), "--rdzv_backend", "c10d",
                 "--rdzv_endpoint", f"{host}:{s.rdzv_port}", "--rdzv_id", env["SLURM_JOB_ID"]]
    return argv + [*worker, str(config_path)]


@contextlib.contextmanager
def sigterm_left_to_the_scheduler(args: Any) -> Iterator[None]:
    """torch's elastic agent replaces the SIGTERM handler with one that raises (and then stops the workers). Where
    this process already handles SIGTERM (submitit under SLURM logs and bypasses it, a sweeper interrupts), keep
    that handler: SLURM's SIGTERM before a requeue must not turn a job that is being requeued into a failed one.
    With the default handler torch keeps its own, which stops the workers (they run in sessions of their own).
    `args`: torchrun's parsed arguments, whose `signals_to_handle` (2.13 has it) its launcher copies into
    TORCHELASTIC_SIGNALS_TO_HANDLE, the list the agent registers its handler for (older releases read only that)."""
    owned = threading.current_thread() is threading.main_thread() and (
        callable(signal.getsignal(signal.SIGTERM)) or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)
    previous = os.environ.get(TORCH_SIGNALS)
    if owned:
        handled = getattr(args, "signals_to_handle", None) or previous or "SIGTERM,SIGINT,SIGHUP,SIGQUIT"
        kept = ",".join(s for s in handled.split(",") if s.strip() != "SIGTERM")
        os.environ[TORCH_SIGNALS] = kept
        if hasattr(args, "signals_to_handle"):
            args.signals_to_handle = kept
    try:
        yield
    finally:
        if owned and previous is None:
            os.environ.pop(TORCH_SIGNALS, None)
        elif owned:
            os.environ[TORCH_SIGNALS] = previous


def launch(cfg: DictConfig, worker: tuple[str, ...] = WORKER, quiet: bool = False) -> dict[str, Any]:
    """Run the job on `planned_world_size(cfg)` processes and return rank 0's result.json.

    `worker` is what torchrun starts per rank with the saved config's path (tests start a worker
    with an injected fault).

    A worker failure (an exception, a kill) ends every worker; the job is then recorded as failed
    with the first failure's message (the root cause: the others only lost their peer), unless
    rank 0 had already written a result that is not a failure. Workers ended by the scheduler's SIGTERM (a
    requeue, a preemption) are not a failure: nothing is recorded and the agent waits for the scheduler's kill,
    as the single-process path does (`trainers.job.isolate`).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = save_job_config(cfg)
    (run_dir / RESULT).unlink(missing_ok=True)
    if accelerate_on_cpu(cfg):
        os.environ["ACCELERATE_USE_CPU"] = "true"  # else accelerate leaves each CPU rank training alone
    # each worker sets torch's threads from train.num_threads; OpenMP's own pool follows it (torchrun's default: 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.get("num_threads") or 1))
    argv = torchrun_argv(cfg, config_path, worker=worker, quiet=quiet)
    log.info("Starting %d workers: torchrun %s", planned_world_size(cfg), " ".join(argv))
    try:
        args = parse_args(argv)
        with sigterm_left_to_the_scheduler(args), noting_sigterm() as ending:
            try:
                run(args)
            except ChildFailedError:
                if ending.is_set():  # the scheduler's SIGTERM ended the workers: a requeue, a cancel, the time limit
                    await_the_end()
                raise
    except ChildFailedError as exc:
        failed_rank, failure = exc.get_first_failure()  # the earliest: the others only lost their peer
        message = failure.message  # a recorded worker's error file: {"message": ..., "extraInfo": ...}
        message = str(message.get("message", message) if isinstance(message, dict) else message)
        error = f"rank {failed_rank}: {(message.strip() or f'exit code {failure.exitcode}').splitlines()[0]}"
        result = read_result(run_dir)
        if result is None or result.get("status") == FAILED:
            atomic_write_json(run_dir / RESULT, failed_result(
                cfg, error, world_size=planned_world_size(cfg), strategy=cfg.strategy.name))
        raise RuntimeError(f"distributed job failed: {error}") from exc
    if cfg.get("prepare_only"):
        return {}
    result = read_result(run_dir)
    if result is None:
        raise RuntimeError(f"workers ended without a result.json in {run_dir}")
    return result
