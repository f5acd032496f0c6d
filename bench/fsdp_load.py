"""Host memory of each rank while an FSDP job loads a Qwen2-0.5B-shaped checkpoint saved in bf16.

    python -m bench.fsdp_load                  # 2 gloo processes on this CPU; about 2 minutes

The job's own path on two real processes: TrainingArguments, then `load_model(cfg, sharded=True)` (rank 0
reads the checkpoint in its own dtype and casts to `model.dtype`, rank 1 builds the model on the meta device),
then accelerate's FSDP2 preparation with cpu_ram_efficient_loading (rank 0's weights broadcast, each rank
keeps its shard). Each rank's peak RSS (VmHWM) is read after the load and after the preparation, and what it
still holds after the preparation (VmRSS). The weights
are random (no hub here); only their shapes and dtype matter. The claim it checks (docs/cluster.md): only rank 0
materialises the model, so rank 1's peak through the load is at most a quarter of rank 0's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Qwen2-0.5B's published shape: 494M parameters with its tied embeddings
QWEN2_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
             "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0}


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak resident set (VmHWM), or its current one (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def write_checkpoint(out: Path) -> int:
    """A random Qwen2-0.5B-shaped checkpoint in bf16 (as Qwen2 checkpoints are published); its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**QWEN2_05B)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def fsdp_job_model(model_dir: str, run_dir: Path):
    """(cfg, model) as a 2-process fsdp job builds its training model: TrainingArguments first, then
    `load_model(cfg, sharded=True)` (rank 1 on the meta device). Needs the process group."""
    from trainers.job.arguments import training_arguments
    from trainers.job.config import compose_job
    from trainers.job.prepare import load_model

    cfg = compose_job(["strategy=fsdp", "strategy.nproc_per_node=2", f"model.path={model_dir}",
                       "model.embedded=false", "model.dtype=float32", "logger=none", f"run_dir={run_dir}"])
    training_arguments(cfg, Path(cfg.run_dir))
    return cfg, load_model(cfg, sharded=True)


def shard_as_accelerate_does(cfg, model):
    """accelerate's own FSDP2 preparation with cpu_ram_efficient_loading: rank 0's weights broadcast, each rank
    keeps its shard."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    from trainers.job.arguments import fsdp_layer_classes

    accelerator = Accelerator(cpu=True)
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, cpu_ram_efficient_loading=True, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=fsdp_layer_classes(cfg))
    return fsdp2_prepare_model(accelerator, model)


def worker(model_dir: str, out_dir: str) -> None:
    """One rank of the job (run under torchrun)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    before = rss_mb()
    cfg, model = fsdp_job_model(model_dir, Path(out_dir) / f"run{rank}")
    loaded = rss_mb()
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    dist.barrier()
    shard_as_accelerate_does(cfg, model)
    prepared, now = rss_mb(), rss_mb("VmRSS")
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "before_load_mb": round(before), "after_load_mb": round(loaded),
         "after_preparation_mb": round(prepared), "resident_after_preparation_mb": round(now), "dtypes": dtypes}))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="fsdp-load-") as tmp:
        model_dir, out_dir = Path(tmp) / "qwen2-0.5b-bf16", Path(tmp) / "out"
        out_dir.mkdir()
        params = write_checkpoint(model_dir)
        file_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "bench.fsdp_load", "--worker", str(model_dir), str(out_dir)]
        run = subprocess.run(command, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                             timeout=1800)
        if run.returncode != 0:
            raise SystemExit(f"the 2-process load failed (rc {run.returncode}):\n{run.stderr[-3000:]}")
        ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    ratio = ranks[1]["after_load_mb"] / ranks[0]["after_load_mb"]
    print(json.dumps({"params": params, "checkpoint_file_mb": round(file_mb), "ranks": ranks,
                      "rank1_over_rank0_after_load": round(ratio, 3), "within_quarter": ratio <= 0.25}, indent=1))


if __name__ == "__main__":
    main()
