"""The trained model as a folder `AutoModelForCausalLM.from_pretrained` loads (`train.save_model: bf16`).

Checkpoints serve resume only and are deleted when a job ends ok; a model someone wants to keep is
exported on purpose: safetensors in bfloat16 (half of fp32 master weights), with the config (its dtype
bfloat16: `from_pretrained(path, dtype="auto")` loads it as it is) and tokenizer,
written aside and renamed into `<run_dir>/model`. Under ZeRO-3 and FSDP the weights are sharded: every
rank joins gathering the full state dict (a collective), rank 0 alone writes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import Trainer
from transformers.utils import CONFIG_NAME

from trainers.job.validate import EXPORT_DTYPES
from trainers.runtime.collectives import barrier
from trainers.runtime.process import is_main_process
from trainers.runtime.run_dir import apply_umask

MODEL_DIR = "model"


def export_model(trainer: Trainer, run_dir: Path, precision: str) -> Path:
    """Write the trained weights in `precision` (a key of EXPORT_DTYPES) to `<run_dir>/model`; its path."""
    dtype = getattr(torch, EXPORT_DTYPES[precision])
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # every rank: gathers the shards
    out = Path(run_dir) / MODEL_DIR
    if is_main_process():
        model = trainer.accelerator.unwrap_model(trainer.model)
        state = {name: tensor.detach().to("cpu", dtype) if tensor.is_floating_point() else tensor.detach().cpu()
                 for name, tensor in state.items()}
        partial = out.with_name(f".{MODEL_DIR}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, state_dict=state)  # safetensors
        # the config names the weights' dtype (save_pretrained writes the training model's): dtype="auto" keeps it
        config = json.loads((partial / CONFIG_NAME).read_text())
        (partial / CONFIG_NAME).write_text(json.dumps({**config, "dtype": str(dtype).removeprefix("torch.")},
                                                      indent=2, sort_keys=True) + "\n")
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(partial)
        apply_umask(partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    barrier()
    return out
