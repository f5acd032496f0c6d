"""One grid point on N processes: the Hydra job is the agent, torch's elastic launcher starts the workers.

With `strategy.nproc_per_node × strategy.nnodes > 1` the Hydra job (whatever launcher ran it: local,
joblib, submitit, SLURM) writes the resolved config once to `<run_dir>/.distributed/job.yaml` and
hands it to `torch.distributed.run` (standalone rendezvous on one node; a c10d rendezvous on the
first host of a SLURM allocation, one agent task per node). Each worker reads that file and runs the
same `trainers.train.run_job`; it never re-enters Hydra (per-rank output directories and races:
Hydra #2070). Rank 0 alone writes the run directory, W&B and result.json; a worker that dies takes
the others down with it (torchelastic stops the group), and the agent records the job as failed.

    python -m trainers.train strategy=ddp strategy.nproc_per_node=2      # the agent
    python -m trainers.distributed <run_dir>/.distributed/job.yaml     # what each worker runs
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from trainers.run_dir import RESULT, atomic_write_json, atomic_write_text, read_result
from trainers.validate import ConfigError

log = logging.getLogger(__name__)

JOB_CONFIG = Path(".distributed") / "job.yaml"
STRATEGIES = ("single", "ddp", "fsdp", "deepspeed_zero3")


# ---- where this process stands --------------------------------------------------------------------

def planned_world_size(cfg: DictConfig) -> int:
    """Processes the job's strategy asks for (1 without a strategy group)."""
    s = cfg.get("strategy")
    return 1 if s is None else int(s.nproc_per_node) * int(s.nnodes)


def world_size() -> int:
    """Processes of the running job (torchrun's WORLD_SIZE; 1 outside a worker)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0, the only process that writes the run directory, W&B and result.json."""
    return rank() == 0


def is_worker() -> bool:
    """A process started by torch's elastic launcher (ours, or a user's own torchrun)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (unchanged when running alone): one decision, taken once."""
    if not dist_ready():
        return value
    box = [value if is_main_process() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist_ready():
        torch.distributed.barrier()


# ---- refusals (ConfigError: one line, exit 2, before any step) ------------------------------------

def check_devices(cfg: DictConfig, visible_gpus: int | None = None) -> None:
    """Refuse what would silently change the experiment or re-enter Hydra per rank."""
    gpus = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    planned = planned_world_size(cfg)
    if planned == 1 and gpus > 1:
        raise ConfigError(
            f"{gpus} GPUs are visible to one process (the HF Trainer would use DataParallel and multiply the batch); "
            f"run strategy=ddp strategy.nproc_per_node={gpus}, or set CUDA_VISIBLE_DEVICES to one GPU"
        )
    if is_worker():
        raise ConfigError(
            "trainers.train was started under torchrun; run it directly with "
            f"strategy=ddp strategy.nproc_per_node={max(world_size(), 2)}: the job starts its own workers"
        )
    s = cfg.get("strategy")
    if s is not None and s.name not in STRATEGIES:
        raise ConfigError(f"strategy={s.name!r} is not known; use one of {', '.join(STRATEGIES)}")
    if s is not None and (int(s.nproc_per_node) < 1 or int(s.nnodes) < 1):
        raise ConfigError(f"strategy.nproc_per_node={s.nproc_per_node} and strategy.nnodes={s.nnodes} must be >= 1")
    if s is not None and s.name != "single" and torch.cuda.is_available() and gpus < int(s.nproc_per_node):
        raise ConfigError(f"strategy.nproc_per_node={s.nproc_per_node} but {gpus} GPUs are visible on this node; "
                          f"lower it or request more GPUs (hydra.launcher.gpus_per_node)")
    if s is not None and s.name in ("fsdp", "deepspeed_zero3") and not torch.cuda.is_available():
        raise ConfigError(f"strategy={s.name} needs GPUs (on CPU the HF Trainer silently falls back to DDP); "
                          "use strategy=ddp here")


# ---- the agent ------------------------------------------------------------------------------------

def save_job_config(cfg: DictConfig) -> Path:
    """The resolved config, written once (atomically) for the workers, which have no Hydra to resolve it."""
    path = Path(cfg.run_dir).resolve() / JOB_CONFIG
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(resolved)))
    return path


def load_job_config(path: Path | str) -> DictConfig:
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def slurm_first_host(nodelist: str) -> str:
    """The allocation's first host (SLURM_JOB_NODELIST is compressed, e.g. gpu[03-04])."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


WORKER = ("--module", "trainers.distributed")


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


def launch(cfg: DictConfig, worker: tuple[str, ...] = WORKER, quiet: bool = False) -> dict[str, Any]:
    """Run the job on `planned_world_size(cfg)` processes and return rank 0's result.json.

    `worker` is what torchrun starts per rank with the saved config's path (tests start a worker
    with an injected fault).

    A worker failure (an exception, a kill) ends every worker; the job is then recorded as failed
    with the first failure's message (the root cause: the others only lost their peer), unless
    rank 0 had already written a result that is not a failure.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = save_job_config(cfg)
    (run_dir / RESULT).unlink(missing_ok=True)
    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"  # else accelerate leaves each CPU rank training alone
    # each worker sets torch's threads from train.num_threads; OpenMP's own pool follows it (torchrun's default: 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.get("num_threads") or 1))
    argv = torchrun_argv(cfg, config_path, worker=worker, quiet=quiet)
    log.info("Starting %d workers: torchrun %s", planned_world_size(cfg), " ".join(argv))
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        failed_rank, failure = exc.get_first_failure()  # the earliest: the others only lost their peer
        message = failure.message  # a recorded worker's error file: {"message": ..., "extraInfo": ...}
        message = str(message.get("message", message) if isinstance(message, dict) else message)
        error = f"rank {failed_rank}: {(message.strip() or f'exit code {failure.exitcode}').splitlines()[0]}"
        result = read_result(run_dir)
        if result is None or result.get("status") == "failed":
            from trainers.train import job_identity

            atomic_write_json(run_dir / RESULT, {
                **job_identity(cfg), "status": "failed", "error": error, "accuracy": None, "m_theta": None,
                "world_size": planned_world_size(cfg), "strategy": cfg.strategy.name,
            })
        raise RuntimeError(f"distributed job failed: {error}") from exc
    if cfg.get("prepare_only"):
        return {}
    result = read_result(run_dir)
    if result is None:
        raise RuntimeError(f"workers ended without a result.json in {run_dir}")
    return result


# ---- the worker -----------------------------------------------------------------------------------

def _setup_worker_logging() -> None:
    """Rank 0 logs like a job run by hand; the others say only what is wrong."""
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format=f"[%(asctime)s][rank {rank()}][%(name)s][%(levelname)s] - %(message)s",
    )


@record  # a worker's exception reaches the agent (ChildFailedError) with its message
def worker_main(config_path: str) -> int:
    """One rank: join the process group (accelerate's own state), then prepare or train from the saved config."""
    from accelerate import PartialState

    _setup_worker_logging()
    # SLURM's preemption/time-limit warning is the agent's (submitit checkpoints and requeues the job);
    # a worker that died of it would end the job as failed before the requeue.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    cfg = load_job_config(config_path)
    if cfg.train.get("num_threads"):
        torch.set_num_threads(int(cfg.train.num_threads))
    PartialState(cpu=not torch.cuda.is_available())  # process group: gloo on CPU, NCCL on GPUs
    try:
        if cfg.get("prepare_only"):
            from trainers.prepare import prepare
            from trainers.train import training_device

            prepare(cfg, device=training_device(), reference=True)
        else:
            from trainers.train import run_job

            run_job(cfg)
        barrier()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m trainers.distributed <run_dir>/.distributed/job.yaml (started by torchrun)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(worker_main(sys.argv[1]))
