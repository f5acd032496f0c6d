"""Load the training model as an fsdp job does, then shard it with accelerate's own FSDP2 preparation.

    torchrun --nproc_per_node 2 tests/fsdp_load_worker.py <model_dir> <out.json>

TrainingArguments first, then `load_model(cfg, sharded=True)` (rank 1 builds the model on the meta device),
then `fsdp2_prepare_model` with cpu_ram_efficient_loading, which broadcasts rank 0's weights. Rank 1 writes
out.json: the devices its parameters were loaded on and the largest difference of any full (gathered)
parameter from the checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from bench.fsdp_load import fsdp_job_model, shard_as_accelerate_does


def main(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    cfg, model = fsdp_job_model(model_dir, Path(out).parent / f"run{rank}")
    loaded_on = sorted({p.device.type for p in model.parameters()})
    model = shard_as_accelerate_does(cfg, model)
    expected = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    worst = 0.0
    for name, param in model.state_dict().items():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        worst = max(worst, (full - expected[name]).abs().max().item())
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())
    if rank == 1:
        Path(out).write_text(json.dumps({"loaded_on": loaded_on, "worst": worst, "sharded": sharded}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
