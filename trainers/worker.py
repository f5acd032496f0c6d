"""What torchrun starts on every rank of a multi-process job (`trainers.job.agent` names it by module).

Each rank joins the process group (accelerate's own state: gloo on CPU, NCCL on GPUs), reads the
resolved config the agent saved, and prepares or trains exactly as a one-process job does; it never
re-enters Hydra.

    python -m trainers.worker <run_dir>/.distributed/job.yaml       (started by torchrun, not by hand)
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import torch
from omegaconf import DictConfig
from torch.distributed.elastic.multiprocessing.errors import record

from trainers.job.arguments import accelerate_on_cpu, deepspeed_on_cpu, process_group_timeout
from trainers.job.config import load_job_config
from trainers.recipe import prepare_caches, run_job
from trainers.runtime.collectives import barrier
from trainers.runtime.process import is_main_process, rank


def setup_logging() -> None:
    """Rank 0 logs like a job run by hand; the others say only what is wrong."""
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format=f"[%(asctime)s][rank {rank()}][%(name)s][%(levelname)s] - %(message)s",
    )


def _die_with_agent() -> None:
    """Linux: SIGKILL this worker when the agent that started it dies. torchrun starts workers in sessions
    of their own, so an agent that exits for a requeue (submitit, after the job saved on SLURM's warning)
    would otherwise leave them training on with nobody to collect them."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def join_process_group(cfg: DictConfig) -> None:
    """Create this rank's process group (accelerate's state, which the Trainer reuses) with the job's
    `train.ddp_timeout`: the group exists before TrainingArguments, so their timeout would come too late."""
    from accelerate import PartialState

    if cfg.strategy.get("deepspeed"):  # DeepSpeed makes the group (its CPU accelerator: gloo), as the Trainer will
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        os.environ.pop("ACCELERATE_USE_CPU", None)  # the agent's, from an earlier job of its process
    PartialState(cpu=accelerate_on_cpu(cfg), timeout=process_group_timeout(cfg),
                 **({"backend": "gloo"} if deepspeed_on_cpu(cfg) else {}))


@record  # a worker's exception reaches the agent (ChildFailedError) with its message
def worker_main(config_path: str) -> int:
    """One rank: join the process group, then prepare or train from the saved config."""
    setup_logging()
    # SLURM's preemption/time-limit warning is the agent's (submitit checkpoints and requeues the job);
    # a worker that died of it would end the job as failed before the requeue.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    _die_with_agent()
    cfg = load_job_config(config_path)
    if cfg.train.get("num_threads"):
        torch.set_num_threads(int(cfg.train.num_threads))
    join_process_group(cfg)
    try:
        if cfg.get("prepare_only"):
            prepare_caches(cfg)
        else:
            run_job(cfg)
        barrier()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m trainers.worker <run_dir>/.distributed/job.yaml (started by torchrun)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(worker_main(sys.argv[1]))
