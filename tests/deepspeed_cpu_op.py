"""DeepSpeed's shared-memory collectives for CPU ranks, compiled once per environment instead of once per test run.

On a CPU, DeepSpeed's communication backend compiles its shm op (two C++ files) the first time a process group
starts: some 27 s of one core, paid by the suite's first ZeRO-3 test, on a machine already running the other
test worker. A GPU job never builds it (NCCL). torch keeps compiled extensions under TORCH_EXTENSIONS_DIR (by
default the user's cache, which the suite points into its scratch directory, so it compiled again every run);
the suite keeps them in the environment's own `torch_extensions/` instead, where `make test`'s install step
builds the op (`python tests/deepspeed_cpu_op.py`) and a new environment starts without it.

    python tests/deepspeed_cpu_op.py    # builds it into <environment>/torch_extensions; prints where
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def extensions_dir() -> Path | None:
    """The environment's own directory for compiled torch extensions; None outside a virtual environment
    (the system's prefix is not ours to write in)."""
    return Path(sys.prefix) / "torch_extensions" if sys.prefix != sys.base_prefix else None


def build() -> Path | None:
    """Compile DeepSpeed's CPU shm op into `extensions_dir()`; the op's directory, or None where none is built."""
    where = extensions_dir()
    if where is None:
        return None
    os.environ["TORCH_EXTENSIONS_DIR"] = str(where)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.comm.torch import build_shm_op

    module = build_shm_op()
    return Path(module.__file__).parent if module is not None else None


if __name__ == "__main__":
    built = build()
    print(f"DeepSpeed's CPU shm op: {built}" if built else "DeepSpeed's CPU shm op: not built (no virtual "
          "environment, or DeepSpeed finds it incompatible here); the first ZeRO-3 test compiles it")
