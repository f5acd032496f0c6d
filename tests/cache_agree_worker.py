"""Two ranks look up a cached scores entry that rank 1 cannot read (its read raises, as on a stale NFS handle).

    torchrun --nproc_per_node 2 tests/cache_agree_worker.py <cache_dir> <key> <out_dir>

Each rank calls the prepare step's `_cached_or_sharded` with a computation that, like the sharded scoring pass,
all-reduces across the ranks, and writes out_dir/rank<r>.json: whether it computed and the scores it got.
The group times out after 60 s, so a rank left alone in a collective fails the run instead of hanging it.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainers.job import prepare
from trainers.model.scoring import Scores


def main(cache_dir: str, key: str, out_dir: str) -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    if dist.get_rank() == 1:
        def unreadable(*_args):
            raise OSError("Stale file handle")
        prepare.load_scores = unreadable

    def compute() -> Scores:
        shard = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(shard)  # the scoring pass gathers every rank's shard
        return Scores(logps=shard.repeat(3), preds=torch.zeros(3, dtype=torch.long), token_logps=shard.repeat(3))

    scores, computed = prepare._cached_or_sharded(Path(cache_dir), key, compute)
    out = {"computed": computed, "logps": scores.logps.tolist()}
    (Path(out_dir) / f"rank{dist.get_rank()}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
