#!/usr/bin/env bash
# GPU check of issue 10 (run where a GPU is lent; nothing here runs on a CPU-only machine):
# a 2-step FSDP job and a 2-step DeepSpeed ZeRO-3 job, each through the real job path
# (python -m trainers.train -> agent -> torch.distributed.run -> worker -> HF Trainer + accelerate),
# on one GPU, for a Qwen2-0.5B-shaped model built from a config (random weights, no download; the
# embedded world's tokenizer and questions), fp32 master weights with bf16 compute.
# Prints, per strategy: status, step time (train_s / steps), tokens/s and peak GPU memory (rank 0),
# read from the job's result.json.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default /tmp/sftsweep-gpu-check
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-/tmp/sftsweep-gpu-check}
mkdir -p "$OUT"
STRATEGIES=${STRATEGIES:-fsdp deepspeed_zero3}   # STRATEGIES=ddp runs the same harness on a CPU (one process)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU visible"
$PY -c "import deepspeed" 2>/dev/null || $PY -m pip install -q "deepspeed>=0.15"

# A small embedded world (its tokenizer and questions), then a Qwen2-0.5B-shaped model with that tokenizer.
$PY - "$OUT" <<'PYEOF'
import shutil, sys
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from bench.gpu import SHAPES
from trainers.world import WorldConfig, ensure_embedded_world

out = Path(sys.argv[1])
world = ensure_embedded_world(out / "world", WorldConfig(n_entities=48, n_train_entities=24, n_attributes=4,
                              n_train_questions=96, n_eval_questions=64, pretrain_steps=20, batch_size=16))
model_dir = out / "qwen2-0.5b-shape"
if not (model_dir / "config.json").exists():
    s = SHAPES["qwen2-0.5b"]
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                         num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads,
                         num_key_value_heads=s.num_kv_heads, max_position_embeddings=s.max_positions,
                         tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"])
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    for f in world.model_dir.iterdir():
        if "token" in f.name or f.name == "special_tokens_map.json":
            shutil.copy(f, model_dir / f.name)
print(f"model: {model_dir}  world: {world.root}")
PYEOF

COMMON=(logger=none model.embedded=false "paths.embedded_dir=$OUT/world" "model.path=$OUT/qwen2-0.5b-shape"
        model.name=qwen2-0.5b-shape model.dtype=float32 model.gradient_checkpointing=false train.bf16=true
        train.max_steps=2 train.logging_steps=1 train.eval_steps=0 train.global_batch_size=8
        train.per_device_batch_size=8 train.eval_batch_size=32 train.lr=1e-5 train.num_threads=4
        "paths.cache_dir=$OUT/cache" method=minor_sft method.beta=0.1 strategy.nproc_per_node=1 strategy.gpus_per_node=1)
status=0
for strategy in $STRATEGIES; do
  run_dir="$OUT/runs/$strategy"
  rm -rf "$run_dir"
  echo "== $strategy"
  $PY -m trainers.train "${COMMON[@]}" "strategy=$strategy" "run_dir=$run_dir" || status=1
  $PY - "$run_dir/result.json" "$strategy" <<'PYEOF' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
step_s = r["train_s"] / r["steps"] if r.get("steps") else None
print(json.dumps({"strategy": sys.argv[2], "status": r["status"], "error": r.get("error"), "steps": r.get("steps"),
                  "step_s": step_s, "tokens_per_s": r.get("tokens_per_s"),
                  "peak_gpu_memory_gb": r.get("peak_gpu_memory_gb"), "world_size": r.get("world_size"),
                  "effective_batch": r.get("effective_batch")}))
sys.exit(0 if r["status"] == "ok" else 1)
PYEOF
done
exit $status
