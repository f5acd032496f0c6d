#!/usr/bin/env bash
# `make gpu-kit-check`: the GPU check's CPU parts in a simulated offline GPU node, here. The node (see
# docs/benchmarks.md) has CPython 3.12 with torch 2.11, transformers 5.17 and accelerate 1.15 and no Hydra,
# reaches no registry and no model hub. This builds such a venv once ($NODE, default .cache/gpu-node: ignored;
# PyPI's torch 2.11.0 wheel, the node's own CUDA build, which runs on a CPU), then runs bench/gpu_check.sh with
# it as the node would: the kit from gpu-kit/ installed with --no-index, pip's configuration and every index
# and proxy cut off, the Hugging Face hub offline, and the `STRATEGIES=ddp SHAPE=tiny` path on the CPU (with
# a DeepSpeed ZeRO-3 job too: the kit's DeepSpeed on the node's Python and torch).
#
#   bash bench/gpu_node.sh [OUT_DIR]        # default /tmp/sftsweep-gpu-node-check; prints the wall time
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-$(command -v python3.12 || echo /root/.pyenv/versions/3.12.1/bin/python3.12)}
NODE=${NODE:-.cache/gpu-node}
OUT=${1:-/tmp/sftsweep-gpu-node-check}
# The node's versions (docs/benchmarks.md) and the packages of its image DeepSpeed needs; their own needs come
# from the index at build time.
NODE_PACKAGES=(torch==2.11.0 transformers==5.17.0 accelerate==1.15.0 numpy==2.5.2 huggingface_hub==1.33.0
               safetensors==0.8.0 tokenizers==0.23.2 psutil einops msgpack ninja py-cpuinfo)
if [ ! -x "$NODE/bin/python" ]; then
  "$PY312" -m venv "$NODE"
  "$NODE/bin/python" -m pip install -q "${NODE_PACKAGES[@]}"
fi
if "$NODE/bin/python" -c "import hydra" 2>/dev/null; then
  echo "error: $NODE has Hydra, the node has not: rm -rf $NODE and run this again" >&2; exit 2
fi
[ -n "$(ls gpu-kit/*.whl 2>/dev/null)" ] || bash bench/gpu_kit.sh
rm -rf "$OUT"
started=$(date +%s)
status=0
env -u PYTHONPATH -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    PIP_NO_INDEX=1 http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled PY="$NODE/bin/python" STRATEGIES="ddp deepspeed_zero3" \
    SHARDED=ddp SHAPE=tiny STEPS=${STEPS:-6} BUDGET_S=${BUDGET_S:-2400} bash bench/gpu_check.sh "$OUT" > "$OUT.log" 2>&1 || status=$?
tail -5 "$OUT.log"
echo "simulated node: $("$NODE/bin/python" -c 'import sys, torch, transformers, accelerate; print(
  "Python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
  "accelerate", accelerate.__version__)'); check exit $status; wall $(( $(date +%s) - started )) s; log $OUT.log"
exit $status
