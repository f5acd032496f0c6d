"""The few collectives a job's ranks take together: one decision broadcast, a vote, a barrier; each a no-op
when the job runs alone (trainers/runtime/process.py says where this process stands)."""

from __future__ import annotations

import os
from typing import Any

import torch

from trainers.runtime.process import is_main_process, world_size


def dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (unchanged when running alone): one decision, taken once."""
    if not dist_ready():
        return value
    box = [value if is_main_process() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_ranks_agree(flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (alone: `flag`): a decision each rank checks for
    itself, then takes together, so that no rank enters a collective the others skip."""
    if not dist_ready():
        return flag
    device = training_device() if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    votes = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MIN)
    return bool(votes.item())


def barrier() -> None:
    if dist_ready():
        torch.distributed.barrier()


def training_device() -> torch.device:
    """The device the Trainer will use (this process's GPU under torchrun/accelerate, else CPU)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
