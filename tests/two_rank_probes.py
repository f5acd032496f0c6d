"""The two-rank checks of tests/test_distributed.py that need no job of their own, in one torchrun: each torchrun
starts three Pythons with torch (some 15 s of CPU on this machine), and the checks share one gloo group.

    torchrun --nproc_per_node 2 tests/two_rank_probes.py <spec.json> <out_dir>

spec.json: {"model_dir": str, "cache_dir": str, "cache_key": str, "samples": [[id, subject, input_ids, prompt_len,
gold], ...], "letters": [...], "pad": int, "batch_size": int}. Each check writes out_dir/<check>.json (from the
rank it names), in this order:

- fsdp_load (rank 1): an fsdp job's model load (TrainingArguments first, then `load_model(cfg, sharded=True)`,
  rank 1 on the meta device) and accelerate's FSDP2 preparation, which broadcasts rank 0's weights: the devices
  rank 1 loaded on and the largest difference of any gathered parameter from the checkpoint. First, because the
  job starts this way: its TrainingArguments meet a fresh process group.
- score_fsdp, score_ddp (rank 0): `score_sharded` over the samples, the model sharded by FSDP2 (the decoder layer
  as the wrap unit, as strategy=fsdp does) or whole on each rank: log-probs, predictions, per-token log-probs.
- cache_agree_rank<r> (each rank): a cached scores entry rank 1 cannot read (its read raises, as on a stale NFS
  handle) looked up by the prepare step's `_cached_or_sharded` with a computation that all-reduces like the
  scoring pass: whether the rank computed and the scores it got. Last, since it patches rank 1's reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from bench.fsdp_load import fsdp_job_model, shard_as_accelerate_does
from trainers.data.prompts import Sample
from trainers.job import prepare
from trainers.model.scoring import Scores, score_sharded


def fsdp_load(model_dir: str, out: Path) -> None:
    rank = dist.get_rank()
    cfg, model = fsdp_job_model(model_dir, out.parent / f"run{rank}")
    loaded_on = sorted({p.device.type for p in model.parameters()})
    model = shard_as_accelerate_does(cfg, model)
    expected = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    worst = 0.0
    for name, param in model.state_dict().items():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        worst = max(worst, (full - expected[name]).abs().max().item())
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())
    if rank == 1:
        out.write_text(json.dumps({"loaded_on": loaded_on, "worst": worst, "sharded": sharded}))


def score(spec: dict, mode: str, out: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        assert any(type(p).__name__ == "DTensor" for p in model.parameters())
    samples = [Sample(*row) for row in spec["samples"]]
    scores = score_sharded(model, samples, spec["letters"], spec["pad"], spec["batch_size"])
    if dist.get_rank() == 0:
        out.write_text(json.dumps({"logps": scores.logps.tolist(), "preds": scores.preds.tolist(),
                                   "token_logps": scores.token_logps.tolist()}))


def cache_agree(cache_dir: str, key: str, out_dir: Path) -> None:
    if dist.get_rank() == 1:
        def unreadable(*_args):
            raise OSError("Stale file handle")

        prepare.load_scores = unreadable

    def compute() -> Scores:
        shard = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(shard)  # the scoring pass gathers every rank's shard
        return Scores(logps=shard.repeat(3), preds=torch.zeros(3, dtype=torch.long), token_logps=shard.repeat(3))

    scores, computed = prepare._cached_or_sharded(Path(cache_dir), key, compute)
    (out_dir / f"cache_agree_rank{dist.get_rank()}.json").write_text(
        json.dumps({"computed": computed, "logps": scores.logps.tolist()}))


def main(spec_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    spec, out = json.loads(Path(spec_path).read_text()), Path(out_dir)
    dist.init_process_group("gloo")
    fsdp_load(spec["model_dir"], out / "fsdp_load.json")
    dist.barrier()
    for mode in ("fsdp", "ddp"):
        score(spec, mode, out / f"score_{mode}.json")
        dist.barrier()
    cache_agree(spec["cache_dir"], spec["cache_key"], out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
