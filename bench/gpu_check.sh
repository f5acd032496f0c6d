#!/usr/bin/env bash
# The GPU check (issues 10, 20, 34): one command, on an offline GPU node as it is, within a time budget
# (default 480 s, set-up included), writing OUT_DIR/gpu_check.json: what it measured and what it could not.
# It uses the node's own Python, torch, transformers and accelerate; what the node lacks (Hydra, OmegaConf,
# antlr4) comes from the kit `make gpu-kit` writes into gpu-kit/, installed offline (no registry is asked).
# The stages, most wanted first (bench/gpu_check.py): set-up (a briefly pretrained embedded world, a
# Qwen2-0.5B-shaped model); a job per strategy through the real job path (memory against the plan, MFU from
# the steps after warm-up); the first step's mθ per method from the world's trained model (<= 1e-3);
# a checkpoint on the scheduler's warning, SIGKILL, resume; bench.gpu's rows at 1,024-token sequences.
#
#   bash bench/gpu_check.sh [OUT_DIR]              # default /tmp/sftsweep-gpu-check
#   STRATEGIES=ddp SHARDED=ddp SHAPE=tiny bash bench/gpu_check.sh /tmp/gc   # the same check's CPU parts
# Exit status: 0 every stage that ran passed, 1 one failed (the JSON says which), 2 the set-up of the check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}                 # the node's own interpreter (the one whose torch sees the GPU)
OUT=${1:-/tmp/sftsweep-gpu-check}
KIT=${KIT:-gpu-kit}
BUDGET_S=${BUDGET_S:-480}
STRATEGIES=${STRATEGIES:-fsdp deepspeed_zero3}
SHARDED=${SHARDED:-fsdp}          # the strategy of the resume and first-step mθ stages (the paper's)
SHAPE=${SHAPE:-qwen2-0.5b}        # a shape of bench/qwen2.py SHAPES
STEPS=${STEPS:-20}
end_epoch_s=$(( $(date +%s) + BUDGET_S ))   # the check's end, set-up included
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU visible"

# The kit, offline, beside the node's own packages (never over them: --no-deps, a separate target).
if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  ls "$KIT"/*.whl >/dev/null 2>&1 || { echo "error: $PY has no Hydra and $KIT/ holds no wheels: run make gpu-kit" \
                                            "where a registry is reachable, then carry $KIT/" >&2; exit 2; }
  rm -rf "$OUT/site"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$OUT/site" "$KIT"/*.whl \
    || { echo "error: the offline install of $KIT/ failed" >&2; exit 2; }
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import hydra, omegaconf, torch, transformers, accelerate" || { echo "error: the job path's imports" >&2; exit 2; }

# shellcheck disable=SC2086
exec $PY -m bench.gpu_check run "$OUT" --end-epoch-s "$end_epoch_s" --strategies $STRATEGIES --sharded "$SHARDED" \
  --shape "$SHAPE" --steps "$STEPS" ${WORLD_STEPS:+--world-steps "$WORLD_STEPS"} ${BENCH_BATCHES:+--bench-batches "$BENCH_BATCHES"}
