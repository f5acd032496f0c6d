"""Benchmark of `python -m analysis.report` at the scale of a real sweep (docs/benchmarks.md):

    .venv/bin/python tests/bench_report.py --runs 500 --questions 3000 --seeds 3

writes that many synthetic run directories (tests/synthetic_runs.py: every contract file, a
select/report split, three methods, five β for the β methods, log-spaced learning rates with an interior
peak, one diverged lr) into a temporary directory, then times the report on them, stage by stage. The
wall time of writing the runs is not part of the measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from synthetic_runs import run_name, write_run

CONFIGS = [("sft", None)] + [(m, b) for m in ("dpo_sft", "minor_sft") for b in (0.03, 0.1, 0.3, 0.5, 1.0)]
PEAK = {"sft": -3.0, "dpo_sft": -2.9, "minor_sft": -2.6}  # log10 lr


def write_sweep(root: Path, runs: int, questions: int, seeds: int) -> int:
    """Synthetic runs over len(CONFIGS) configurations × as many lrs as `runs` needs; returns the count."""
    n_lrs = math.ceil(runs / (len(CONFIGS) * seeds))
    lrs = np.logspace(-4.5, -1.5, n_lrs)
    rng = np.random.default_rng(0)
    difficulty = rng.random(questions)
    written = 0
    for lr in lrs:
        for method, beta in CONFIGS:
            for seed in range(seeds):
                if written == runs:
                    return written
                x = math.log10(lr) - PEAK[method]
                acc = 0.7 - 0.25 * x * x - 0.1 * abs(math.log10((beta or 0.1) / 0.1)) + rng.normal(0, 0.02)
                d = root / run_name(method, float(lr), beta, seed)
                if lr == lrs[-1] and seed == 0:
                    write_run(d, method=method, lr=float(lr), beta=beta, seed=seed, status="diverged",
                              n_questions=questions, base_accuracy=0.13)
                else:
                    correct = difficulty < np.clip(acc, 0.13, 0.95) + rng.normal(0, 0.05, questions)
                    write_run(d, method=method, lr=float(lr), beta=beta, seed=seed, correct=correct,
                              base_accuracy=0.13, split=True, m_theta=float(lr * 1e3), steps=150)
                written += 1
    return written


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--questions", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write result JSON here")
    args = ap.parse_args(argv)
    from analysis.estimate import estimate
    from analysis.report import build_report
    from analysis.rundirs import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        n = write_sweep(root, args.runs, args.questions, args.seeds)
        written_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = build_report(root, use_wandb=False)
        report_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sweep = load_sweep(root)
        for r in sweep.runs["run"]:
            sweep.predictions(r)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        est = estimate(sweep)
        estimate_s = time.perf_counter() - t0
        result = {
            "runs": n, "questions": args.questions, "seeds": args.seeds, "points": len(est.points),
            "resamples": est.n_resamples, "report_s": round(report_s, 2), "load_with_predictions_s": round(load_s, 2),
            "estimate_s": round(estimate_s, 2), "write_runs_s": round(written_s, 1), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "report_files": len(rep.files),
        }
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
