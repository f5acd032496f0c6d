"""Join the process group as a job's worker does, build the job's TrainingArguments, report the group's timeout.

    torchrun --nproc_per_node 2 tests/pg_timeout_worker.py <out_dir> <override>...

Each rank composes the job (the overrides), calls the worker's `join_process_group`, then builds
`training_arguments` and touches `args.device` (the Trainer's own device setup, which reuses the group),
and writes out_dir/rank<r>.json: the timeout the default group's backend holds and the arguments' ddp_timeout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainers.job.arguments import training_arguments
from trainers.job.config import compose_job
from trainers.worker import join_process_group


def main(out_dir: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    cfg = compose_job([*overrides, f"run_dir={Path(out_dir) / 'run'}"])
    join_process_group(cfg)
    args = training_arguments(cfg, Path(cfg.run_dir))
    _ = args.device  # the Trainer's device setup: must reuse the group, not replace it
    group = dist.distributed_c10d._get_default_group()
    backend = group._get_backend(torch.device("cpu"))
    out = {"world_size": dist.get_world_size(), "group_timeout_s": backend.options._timeout.total_seconds(),
           "args_ddp_timeout": args.ddp_timeout}
    (Path(out_dir) / f"rank{dist.get_rank()}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
