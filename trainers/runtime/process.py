"""Where this process stands in a job: one process, or one rank of torch's elastic launcher.

Every fact here is read from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
TORCHELASTIC_RUN_ID) or from the job's strategy config; nothing else in the package re-derives them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import DictConfig


def planned_world_size(cfg: DictConfig) -> int:
    """Processes the job's strategy asks for: nproc_per_node × nnodes (1 without a strategy group)."""
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
