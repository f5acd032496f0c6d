#!/usr/bin/env bash
# GPU check of issues 10 and 20 (run where a GPU is lent; about 8 minutes on one H200), each job through the
# real job path (python -m trainers.train -> agent -> torch.distributed.run -> worker -> HF Trainer +
# accelerate), on one GPU, for a Qwen2-0.5B-shaped model built from a config (random weights, no download;
# the embedded world's tokenizer and questions), fp32 master weights with bf16 compute:
#   1. per strategy ($STRATEGIES), a $STEPS-step job: status, step time, tokens/s, peak GPU memory (rank 0)
#      against the resource plan's per-GPU figure (peak_over_plan), and MFU = 6·N·tokens/s ÷ the card's
#      dense bf16 peak (N: the plan's parameter count; the peak from the data-sheet table in bench/gpu.py);
#   2. a $SHARDED job asked for a checkpoint as SLURM's warning asks (the .save_request file), SIGKILLed
#      (its whole process tree) once that checkpoint is written, then run again: resumed_from_step, status;
#   3. the first training step's m_theta for every method (conf/method/), $SHARDED, bf16: should be <= 1e-3.
# Python parts: bench/gpu_check.py (composes each job's config and plan as the job does).
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default /tmp/sftsweep-gpu-check
#   STRATEGIES=ddp SHARDED=ddp SHAPE=tiny STEPS=2 bash bench/gpu_check.sh /tmp/x   # the same harness on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-/tmp/sftsweep-gpu-check}
STRATEGIES=${STRATEGIES:-fsdp deepspeed_zero3}
SHARDED=${SHARDED:-fsdp}          # the strategy of parts 2 and 3 (the paper's)
SHAPE=${SHAPE:-qwen2-0.5b}        # a shape of bench/gpu.py SHAPES
STEPS=${STEPS:-10}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU visible"
case " $STRATEGIES " in *" deepspeed_zero3 "*) $PY -c "import deepspeed" 2>/dev/null || $PY -m pip install -q "deepspeed>=0.15";; esac

# A small embedded world (its tokenizer and questions), then a model of $SHAPE with that tokenizer.
$PY - "$OUT" "$SHAPE" <<'PYEOF'
import shutil, sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from bench.gpu import SHAPES
from trainers.world import WorldConfig, ensure_embedded_world

out, shape = Path(sys.argv[1]), sys.argv[2]
world = ensure_embedded_world(out / "world", WorldConfig(n_entities=48, n_train_entities=24, n_attributes=4,
                              n_train_questions=96, n_eval_questions=64, pretrain_steps=20, batch_size=16))
model_dir = out / f"{shape}-shape"
if not (model_dir / "config.json").exists():
    s = SHAPES[shape]
    assert len(AutoTokenizer.from_pretrained(world.model_dir)) <= s.vocab_size, "the shape's vocabulary is too small"
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

COMMON=(logger=none model.embedded=false "paths.embedded_dir=$OUT/world" "model.path=$OUT/$SHAPE-shape"
        "model.name=$SHAPE-shape" model.dtype=float32 model.gradient_checkpointing=false train.bf16=true
        train.logging_steps=1 train.eval_steps=0 train.global_batch_size=8
        train.per_device_batch_size=8 train.eval_batch_size=32 train.lr=1e-5 train.num_threads=4
        "paths.cache_dir=$OUT/cache" strategy.nproc_per_node=1 strategy.gpus_per_node=1)
status=0

echo "== 1. one job per strategy: memory against the plan, MFU"
for strategy in $STRATEGIES; do
  job=("${COMMON[@]}" method=minor_sft method.beta=0.1 "strategy=$strategy" "train.max_steps=$STEPS"
       "run_dir=$OUT/runs/$strategy")
  rm -rf "$OUT/runs/$strategy"
  echo "-- $strategy"
  $PY -m trainers.train "${job[@]}" || status=1
  $PY -m bench.gpu_check summary "$OUT/runs/$strategy" "${job[@]}" || status=1
done

echo "== 2. $SHARDED: a checkpoint on the scheduler's warning, SIGKILL, resume"
tree() { local child; for child in $(pgrep -P "$1" || true); do tree "$child"; done; echo "$1"; }
job=("${COMMON[@]}" method=minor_sft method.beta=0.1 "strategy=$SHARDED" "train.max_steps=$((STEPS * 20))"
     "run_dir=$OUT/runs/resume")
rm -rf "$OUT/runs/resume"
$PY -m trainers.train "${job[@]}" > "$OUT/resume-killed.log" 2>&1 &
first=$!
if $PY -m bench.gpu_check request-save "$OUT/runs/resume" 2 300; then
  kill -KILL $(tree "$first") 2>/dev/null || true
  wait "$first" 2>/dev/null || true
  ls "$OUT/runs/resume/checkpoints"
  $PY -m trainers.train "${job[@]}" || status=1
  $PY -m bench.gpu_check summary "$OUT/runs/resume" "${job[@]}" || status=1
else
  kill -KILL $(tree "$first") 2>/dev/null || true
  wait "$first" 2>/dev/null || true
  tail -20 "$OUT/resume-killed.log"
  status=1
fi

echo "== 3. first-step m_theta per method, $SHARDED, bf16 (<= 1e-3 expected)"
for method in $(ls conf/method | sed 's/\.yaml$//'); do
  run_dir="$OUT/runs/m0-$method"
  rm -rf "$run_dir"
  $PY -m trainers.train "${COMMON[@]}" "method=$method" "strategy=$SHARDED" train.max_steps=1 \
      "run_dir=$run_dir" > "$OUT/m0-$method.log" 2>&1 || { tail -20 "$OUT/m0-$method.log"; status=1; }
  echo "$method $($PY -m bench.gpu_check first-m-theta "$run_dir")"
done
exit $status
