"""Where this process stands in a job: one process, or one rank of torch's elastic launcher.

Every fact here is read from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
TORCHELASTIC_RUN_ID) or from the job's strategy config; nothing else in the package re-derives them. No torch
here: the sweeper and a job's entry read these facts before anything loads torch (the collectives that need it
are in trainers/runtime/collectives.py).
"""

from __future__ import annotations

import os

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


# The device nodes of a GPU driver: NVIDIA's, AMD's ROCm (which torch.cuda also counts) and WSL2's GPU bridge.
# Without any of them torch sees no GPU, so the count needs no torch.
GPU_DRIVER_NODES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def gpus_visible() -> int:
    """GPUs torch sees in this process (0 without CUDA). torch is imported on first use, and only on a machine
    with a GPU driver: the facts above need none, and a job's entry on a CPU machine (a joblib worker, the local
    launcher's sweeper, a submitit job) would pay some 4 s of CPU to learn there is none."""
    if not any(os.path.exists(node) for node in GPU_DRIVER_NODES):
        return 0
    import torch

    return torch.cuda.device_count()
