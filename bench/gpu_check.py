"""The Python half of bench/gpu_check.sh: read a job's run directory against its resource plan.

The shell script runs real jobs (`python -m trainers.train`); this module composes the same job config
the way the job does (`compose_job` of the same overrides), computes its plan (`make_plan`), and reads
what the job wrote. It needs no GPU itself, so the script's Python parts are checked on a CPU too.

    python -m bench.gpu_check plan <override>...                 # the plan's figures, nothing run
    python -m bench.gpu_check summary <run_dir> <override>...     # result.json against the plan: memory ratio, MFU
    python -m bench.gpu_check first-m-theta <run_dir>             # m_theta of the first training step
    python -m bench.gpu_check request-save <run_dir> <step> <timeout_s>
                                   # once the job logged <step>, ask it for a checkpoint as SLURM's warning does
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import peak_tflops
from trainers.job.config import compose_job
from trainers.job.plan import Plan, make_plan
from trainers.job.save_request import REQUEST, SAVED
from trainers.runtime.run_dir import atomic_write_json, read_jsonl


def plan_figures(overrides: list[str]) -> tuple[Plan, dict[str, Any]]:
    """The job's plan and the figures this check compares against: parameters and bytes per GPU."""
    cfg = compose_job(overrides)
    plan = make_plan(cfg)
    per_gpu = plan.device.total(plan.gradient_checkpointing)
    return plan, {"params": plan.shape.params, "plan_gpu_gb": per_gpu / 2**30,
                  "gradient_checkpointing": plan.gradient_checkpointing, "on_gpu": plan.on_gpu}


def summary(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """The job's result against its plan: peak GPU memory ÷ the plan's per-GPU figure, and MFU =
    6·N·tokens/s ÷ the device's dense bf16 peak (N: the plan's parameter count; the peak from the
    data-sheet table in bench/gpu.py)."""
    r = json.loads((run_dir / "result.json").read_text())
    _, plan = plan_figures(overrides)
    peak = r.get("peak_gpu_memory_gb")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tflops, source = peak_tflops(device, None)
    tokens_per_s = r.get("tokens_per_s")
    mfu = 6 * plan["params"] * tokens_per_s / (tflops * 1e12) if tflops and tokens_per_s else None
    return {"status": r["status"], "error": r.get("error"), "steps": r.get("steps"),
            "resumed_from_step": r.get("resumed_from_step"), "world_size": r.get("world_size"),
            "step_s": r["train_s"] / r["steps"] if r.get("steps") else None, "tokens_per_s": tokens_per_s,
            "peak_gpu_memory_gb": peak, **plan,
            "peak_over_plan": peak / plan["plan_gpu_gb"] if peak is not None else None,
            "mfu": mfu, "peak_bf16_tflops": tflops, "peak_source": f"data sheet: {source}"}


def first_m_theta(run_dir: Path) -> float | None:
    """m_theta logged at training step 1: the policy's own forward before any update, against the cached
    reference (0 when the reference is scored in the precision training computes in)."""
    rows = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row.get("step") == 1]
    return rows[0].get("m_theta") if rows else None


def request_save(run_dir: Path, after_step: int, timeout_s: float) -> int:
    """Once the job has logged `after_step`, write the request SLURM's warning makes the launcher write
    (trainers/job/save_request.py), and wait for the job's answer: the step it saved at."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        steps = [row.get("step", 0) for row in read_jsonl(run_dir / "metrics.jsonl")] \
            if (run_dir / "metrics.jsonl").exists() else []
        if steps and max(steps) >= after_step:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"the job in {run_dir} logged no step {after_step} within {timeout_s:.0f} s")
    atomic_write_json(run_dir / REQUEST, {"requested_at": time.time()})
    while time.monotonic() < deadline:
        if (run_dir / SAVED).exists():
            return int(json.loads((run_dir / SAVED).read_text())["step"])
        if (run_dir / "result.json").exists():
            raise SystemExit(f"the job in {run_dir} ended before it saw the request: give it more steps")
        time.sleep(0.2)
    raise SystemExit(f"the job in {run_dir} saved no checkpoint within {timeout_s:.0f} s of the request")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("plan", "summary", "first-m-theta", "request-save"):
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "plan":
        out: Any = plan_figures(args)[1]
    elif command == "summary":
        out = summary(Path(args[0]), args[1:])
    elif command == "first-m-theta":
        out = {"first_step_m_theta": first_m_theta(Path(args[0]))}
    else:
        out = {"saved_at_step": request_save(Path(args[0]), int(args[1]), float(args[2]))}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
