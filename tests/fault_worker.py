"""A distributed worker (trainers.worker.worker_main) with a fault injected on one rank, for the tests.

    torchrun ... tests/fault_worker.py <job.yaml>      with SFTSWEEP_FAULT=nan:<rank> or raise:<rank>

nan: that rank's training loss is NaN at every micro-batch (the other ranks' losses stay finite);
raise: that rank raises at its first training micro-batch.
"""

from __future__ import annotations

import os
import sys

from trainers.model import losses
from trainers.runtime.process import rank
from trainers.worker import worker_main


def inject(kind: str, method: str) -> None:
    original = losses.LOSSES[method]

    def faulty(*args, **kwargs):
        loss = original(*args, **kwargs)
        if kind == "raise":
            raise RuntimeError(f"injected failure on rank {rank()}")
        return loss * float("nan")

    losses.LOSSES[method] = faulty


if __name__ == "__main__":
    kind, fault_rank = os.environ["SFTSWEEP_FAULT"].split(":")
    if rank() == int(fault_rank):
        from trainers.job.config import load_job_config

        inject(kind, load_job_config(sys.argv[1]).method.name)
    sys.exit(worker_main(sys.argv[1]))
