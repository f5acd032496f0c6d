"""How long a running job takes to end once a sweeper asks it to stop, on each launcher.

    python -m bench.stop_latency --launcher local joblib slurm     # slurm: a running cluster (tests/local_slurm/)

For each launcher, one smoke grid point (sft, lr 1e-3) trains for many steps through the real sweeper and
launcher (`python -m trainers.train -m`; `local` is Hydra's basic launcher, in the sweeper's process). Once
it has trained `--warm-steps` steps, the stop request is written as the monitors write it
(`trainers.runtime.run_dir.request_stop`); the latency runs from the request to result.json's mtime. The
job logs every step (`train.logging_steps=1`), so progress.json gives the mean step time before the
request. The promise (docs/sweeps.md): a stopped job ends within one step plus a second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainers.runtime.run_dir import PROGRESS, RESULT, STOPPED, read_progress, request_stop

REPO_ROOT = Path(__file__).resolve().parents[1]
SLACK_S = 1.0  # the promise's allowance beyond one step


def sweep_command(launcher: str, sweep_dir: Path, max_steps: int) -> list[str]:
    return [sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", f"launcher={launcher}",
            f"hydra.sweep.dir={sweep_dir}", "logger=none", "grid.seeds=[0]",
            "~grid.methods", "+grid.methods={sft:{lr:[1e-3]}}",  # one point: the experiment's grid replaced
            f"train.max_steps={max_steps}", "train.logging_steps=1", "train.save_steps=0"]


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"the sweep ended (rc {proc.returncode}) while waiting for {what}")
        if time.time() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s")
        time.sleep(0.05)


def measure(launcher: str, warm_steps: int, max_steps: int, timeout_s: float) -> dict:
    """One stop on `launcher`: latency, mean step time before the request, and the status the job ended with."""
    with tempfile.TemporaryDirectory(prefix=f"stop-latency-{launcher}-") as tmp:
        sweep_dir = Path(tmp) / "sweep"
        log = open(Path(tmp) / "sweep.log", "w")
        proc = subprocess.Popen(sweep_command(launcher, sweep_dir, max_steps), cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            def run_dir() -> Path | None:
                found = next(sweep_dir.rglob(PROGRESS), None) if sweep_dir.exists() else None
                return found.parent if found else None

            def step() -> int:
                d = run_dir()
                p = (read_progress(d) or {}) if d else {}
                return int(p.get("step") or 0) if p.get("phase") == "training" else 0

            wait_for(lambda: step() >= 1, timeout_s, "first training step", proc)
            first = read_progress(run_dir())
            wait_for(lambda: step() >= warm_steps, timeout_s, f"step {warm_steps}", proc)
            last = read_progress(run_dir())
            mean_step = (last["updated_at"] - first["updated_at"]) / max(last["step"] - first["step"], 1)
            d = run_dir()
            request_stop(d, STOPPED, "bench.stop_latency")
            requested_at = json.loads((d / "stop_request.json").read_text())["requested_at"]
            wait_for(lambda: (d / RESULT).exists(), timeout_s, RESULT, proc)
            result = json.loads((d / RESULT).read_text())
            latency = (d / RESULT).stat().st_mtime - requested_at
            proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
            log.close()
    return {"launcher": launcher, "latency_s": round(latency, 3), "mean_step_s": round(mean_step, 3),
            "bound_s": round(mean_step + SLACK_S, 3), "within": latency <= mean_step + SLACK_S,
            "status": result["status"], "steps": result.get("steps"), "requested_at_step": last["step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", nargs="+", default=["local", "joblib"],
                        help="any of local, joblib, slurm (slurm needs a running cluster)")
    parser.add_argument("--warm-steps", type=int, default=20, help="steps trained before the request")
    parser.add_argument("--max-steps", type=int, default=2000, help="the job's length (it is stopped long before)")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    for launcher in args.launcher:
        row = measure(launcher, args.warm_steps, args.max_steps, args.timeout_s)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
