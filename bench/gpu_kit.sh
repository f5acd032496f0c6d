#!/usr/bin/env bash
# `make gpu-kit`: the wheels an offline GPU node lacks for bench/gpu_check.sh, into $KIT (default gpu-kit/, ignored).
# Built for CPython 3.12 on manylinux x86-64 (the node's); pure-Python wheels fit any. The list and why:
# bench/gpu_kit.txt. A package PyPI has only as source (antlr4-python3-runtime, deepspeed) is built into a wheel
# here, with $PY's own build tools and torch (DeepSpeed's setup imports torch) and none of DeepSpeed's ops.
# Prints the kit's size and the size of what a device run carries (the repository's files + the kit): at most 64 MiB.
#
#   bash bench/gpu_kit.sh [KIT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}        # any Python with pip and network access; it only downloads and builds
KIT=${1:-${KIT:-gpu-kit}}
LIMIT_MIB=64
rm -rf "$KIT.tmp" && mkdir -p "$KIT.tmp"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
while read -r spec; do
  if ! $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${PLATFORMS[@]}" -d "$KIT.tmp" "$spec" 2>/dev/null; then
    echo "no wheel on the index for $spec: building one here"
    DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$KIT.tmp" "$spec"
  fi
done < <(sed -e 's/#.*//' -e '/^\s*$/d' bench/gpu_kit.txt)
for whl in "$KIT.tmp"/*.whl; do   # what would not install on the node: a compiled wheel for another Python
  case "$whl" in *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-*manylinux*x86_64*.whl) ;;
    *) echo "error: $whl is not for CPython 3.12 on x86-64 Linux; fix bench/gpu_kit.txt" >&2; exit 1;; esac
done
rm -rf "$KIT" && mv "$KIT.tmp" "$KIT"
kit_b=$(cat "$KIT"/*.whl | wc -c)
repo_b=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
ls -l "$KIT"
awk -v k="$kit_b" -v r="$repo_b" -v lim="$LIMIT_MIB" 'BEGIN {
  printf "kit %.2f MiB + repository %.2f MiB = %.2f MiB (a device run carries at most %d MiB)\n",
         k / 2^20, r / 2^20, (k + r) / 2^20, lim; exit (k + r > lim * 2^20) }' || {
  echo "error: the kit and the repository exceed $LIMIT_MIB MiB; drop a wheel from bench/gpu_kit.txt" >&2; exit 1; }
