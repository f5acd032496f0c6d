"""Score samples on N ranks with `trainers.model.scoring.score_sharded`, the model sharded by FSDP2 or whole.

    torchrun --nproc_per_node 2 tests/fsdp_score_worker.py <model_dir> <samples.json> <out.json> <fsdp|ddp>

samples.json: {"samples": [[id, subject, input_ids, prompt_len, gold], ...], "letters": [...], "pad": int,
"batch_size": int}. Rank 0 writes out.json: logps, preds and per-token log-probs in sample order.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM

from trainers.data.prompts import Sample
from trainers.model.scoring import score_sharded


def main(model_dir: str, samples_path: str, out_path: str, mode: str) -> None:
    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    spec = json.loads(open(samples_path).read())
    samples = [Sample(*row) for row in spec["samples"]]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:  # the decoder layer as the wrap unit, as strategy=fsdp does
            fully_shard(layer)
        fully_shard(model)
        assert any(type(p).__name__ == "DTensor" for p in model.parameters())
    scores = score_sharded(model, samples, spec["letters"], spec["pad"], spec["batch_size"])
    if state.is_main_process:
        with open(out_path, "w") as f:
            json.dump({"logps": scores.logps.tolist(), "preds": scores.preds.tolist(),
                       "token_logps": scores.token_logps.tolist()}, f)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
