"""Write run directories by hand, exactly as the trainer does (docs/architecture.md).

The analysis must be testable before any sweep exists, and a report must be previewable without
training anything: `write_run` writes the five contract files from given numbers, and
`python tests/synthetic_runs.py OUT_DIR` writes a small, plausible demo sweep (interior optima, one
diverged point) to try the report on; `--search` writes an Optuna-style β search instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import zlib
from pathlib import Path

import numpy as np

from trainers.runtime.run_dir import atomic_write_text as write_text


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_run(
    run_dir: Path,
    *,
    method: str,
    lr: float,
    beta: float | None = None,
    seed: int = 0,
    status: str = "ok",
    accuracy: float | None = None,
    correct: list[bool] | np.ndarray | None = None,
    n_questions: int = 200,
    base_accuracy: float = 0.25,
    m_theta: float = 0.5,
    train_m_theta: float | None = None,
    dataset: str = "world",
    model: str = "tiny-llama",
    group: str = "test",
    steps: int = 20,
    subjects: list[str] | None = None,
    error: str | None = None,
    finished_at: str | None = None,
    split: bool | list[str] = False,
    subject_info: dict[str, dict[str, str]] | None = None,
    world_seed: int | None = None,
    last_select_accuracy: float | None = None,
    fingerprints: dict[str, str] | None = None,
) -> Path:
    """Write one run directory with all contract files; returns it.

    Correctness per question: `correct` when given (its mean is the accuracy), else round(accuracy·n)
    questions chosen by a permutation seeded from (lr, β, seed), so different configurations get
    different (pairable) prediction sets. Non-ok runs get no accuracy and no predictions. result.json
    gets `finished_at` only when given, as run directories from before that field lack it. `split`:
    each prediction's "select"/"report" split — True alternates them (even questions select), a list gives
    them; False writes none, as runs from before the split did. `subject_info` (subject -> name,
    category) goes into result.json as a job writes it for a data set with a subject mapping; `world_seed`
    (the embedded world's seed) too, when given. `last_select_accuracy`: a stopped/pruned run's last
    intermediate evaluation at step `steps`, in eval.jsonl and result.json's `last_eval`, as a job writes them.
    `fingerprints` (data_fingerprint, tokenizer_fingerprint, model_fingerprint → hash) go into result.json as a
    job writes them; without them the run is one from before they were recorded.
    """
    run_dir = Path(run_dir)
    ok = status == "ok"
    if ok and correct is None:
        if accuracy is None:
            raise ValueError("an ok run needs accuracy or correct")
        rng = np.random.default_rng(zlib.crc32(repr((method, float(lr), beta, seed)).encode()))
        correct = np.zeros(n_questions, dtype=bool)
        correct[rng.permutation(n_questions)[: round(accuracy * n_questions)]] = True
    if correct is not None:
        correct = np.asarray(correct, dtype=bool)
        n_questions = correct.size
        accuracy = float(correct.mean())
    train_m_theta = m_theta * 1.2 if train_m_theta is None else train_m_theta
    write_text(
        run_dir / ".hydra" / "config.yaml",
        f"method:\n  name: {method}\n  beta: {beta if beta is not None else 'null'}\n"
        f"train:\n  lr: {lr}\n  seed: {seed}\ndata:\n  name: {dataset}\n",
    )
    n_log = max(2, steps // 5)
    log_steps = np.linspace(1, steps, n_log).round().astype(int)
    metrics = []
    for i, st in enumerate(log_steps):
        frac = (i + 1) / n_log
        mt = train_m_theta * frac if not (status == "diverged" and i == n_log - 1) else float("nan")
        metrics.append(
            {
                "step": int(st),
                "loss": 2.0 * (1 - 0.5 * frac),
                "m_theta": mt,
                "lr": lr,
                "grad_norm": 1.0,
                "tokens_per_s": 1000.0,
            }
        )
    write_text(run_dir / "metrics.jsonl", _jsonl(metrics))
    evals = [{"step": 0, "accuracy": base_accuracy, "m_theta": 0.0, "n": n_questions}]
    if ok:
        evals.append(
            {
                "step": steps // 2,
                "accuracy": (base_accuracy + accuracy) / 2,
                "m_theta": m_theta / 2,
                "n": n_questions,
            }
        )
        evals.append({"step": steps, "accuracy": accuracy, "m_theta": m_theta, "n": n_questions})
    last_eval = None
    if last_select_accuracy is not None:
        last_eval = {"step": steps, "accuracy": last_select_accuracy, "select_accuracy": last_select_accuracy,
                     "m_theta": m_theta}
        evals.append({**last_eval, "select_n": n_questions // 2, "n": n_questions})
    write_text(run_dir / "eval.jsonl", _jsonl(evals))
    if ok:
        preds = []
        for i, c in enumerate(correct):
            rec = {"id": f"q{i:05d}", "gold": "A", "pred": "A" if c else "B", "correct": bool(c)}
            if subjects:
                rec["subject"] = subjects[i % len(subjects)]
            if split is not False:
                rec["split"] = split[i] if isinstance(split, list) else ("select" if i % 2 == 0 else "report")
            preds.append(rec)
        write_text(run_dir / "predictions.jsonl", _jsonl(preds))
    result = {
        "method": method,
        "lr": lr,
        "beta": beta,
        "seed": seed,
        "dataset": dataset,
        "model": model,
        "group": group,
        "status": status,
        "error": error
        if error is not None
        else (None if ok else f"{status}: non-finite loss at step {steps}"),
        "accuracy": accuracy if ok else None,
        "m_theta": m_theta if ok else None,
        "train_m_theta": train_m_theta,
        "base_accuracy": base_accuracy,
        "eval_n": n_questions,
        "train_n": 3200,
        "steps": steps,
        "train_tokens": steps * 2048,
        "wall_s": 10.0,
        "tokens_per_s": 2048.0,
    }
    if last_eval is not None:
        result["last_eval"] = last_eval
    if finished_at is not None:
        result["finished_at"] = finished_at
    if subject_info is not None:
        result["subject_info"] = subject_info
    if world_seed is not None:
        result["world_seed"] = world_seed
    result.update(fingerprints or {})
    write_text(run_dir / "result.json", json.dumps(result, indent=2))
    return run_dir


def run_name(method: str, lr: float, beta: float | None, seed: int) -> str:
    b = "none" if beta is None else f"{beta:g}"
    return f"method={method}/lr={lr:g}/beta={b}/seed={seed}"


def demo_sweep(root: Path, n_questions: int = 400, group: str = "demo") -> Path:
    """A small sweep in the shape of the embedded world's: SFT peaks at 1e-3, MinorSFT higher at 3e-3,
    every method falls at the top of the grid, SFT diverges at 1e-2, mθ lowest for the DPO-derived losses."""
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    plan = {  # method: {beta: accuracies along lrs}
        "sft": {None: [0.30, 0.48, 0.62, 0.40, None]},
        "dpo_sft": {0.1: [0.28, 0.45, 0.64, 0.50, 0.22], 0.5: [0.26, 0.38, 0.44, 0.42, 0.30]},
        "minor_sft": {0.1: [0.27, 0.44, 0.63, 0.70, 0.35], 0.5: [0.25, 0.35, 0.45, 0.47, 0.33]},
    }
    m_scale = {"sft": 1.0, "dpo_sft": 0.45, "minor_sft": 0.55}
    for method, betas in plan.items():
        for beta, accs in betas.items():
            for lr, acc in zip(lrs, accs, strict=True):
                for seed in (0, 1):
                    path = root / run_name(method, lr, beta, seed)
                    mt = m_scale[method] * 40 * math.sqrt(lr) * (1 - (beta or 0))
                    outcome = (
                        {"status": "diverged"}
                        if acc is None
                        else {"accuracy": min(1.0, max(0.0, acc + (0.02 if seed else -0.02))), "steps": 150}
                    )
                    write_run(
                        path,
                        method=method,
                        lr=lr,
                        beta=beta,
                        seed=seed,
                        n_questions=n_questions,
                        base_accuracy=0.13,
                        group=group,
                        m_theta=mt,
                        split=True,
                        **outcome,
                    )
    return root


SEARCH_START = dt.datetime(2026, 11, 26, 18, 0, tzinfo=dt.timezone.utc)


def search_sweep(
    root: Path,
    trials: list[tuple[float, float | str]] | None = None,
    *,
    method: str = "minor_sft",
    lr: float | list[float] = 1e-3,
    n_questions: int = 200,
    group: str = "search",
) -> Path:
    """An Optuna-style search, laid out as `make optuna` lays it out: one run directory per trial,
    `ROOT/<method>/lr<lr>_beta<β>_seed0`, each with `finished_at` (trial i finishes 7·i minutes after
    SEARCH_START), plus the sweeper's optuna.db and optimization_results.yaml, which analysis must not
    read (here they are junk, to prove it).

    trials: (β, accuracy or "diverged"/"failed") in finish order; default six log-uniform β in
    [0.01, 1] (seeded) with accuracy peaking near β = 0.1, the fourth trial diverged. `lr` is one
    learning rate, or one per trial (a search that samples it too). Directories are written in reverse
    finish order, so neither the directory names nor the mtimes give the finish order.
    """
    if trials is None:
        rng = np.random.default_rng(3)  # a seed whose history improves twice: a telling demo
        betas = 10 ** rng.uniform(-2, 0, size=6)
        trials = [
            (float(b), "diverged" if i == 3 else round(0.62 - 0.12 * math.log10(b / 0.1) ** 2, 3))
            for i, b in enumerate(betas)
        ]
    lrs = lr if isinstance(lr, list) else [lr] * len(trials)
    for i in reversed(range(len(trials))):
        beta, outcome = trials[i]
        stamp = (SEARCH_START + dt.timedelta(minutes=7 * i)).isoformat()
        kw = {"status": outcome} if isinstance(outcome, str) else {"accuracy": outcome}
        write_run(
            root / method / f"lr{lrs[i]}_beta{beta}_seed0",
            method=method,
            lr=lrs[i],
            beta=beta,
            n_questions=n_questions,
            group=group,
            finished_at=stamp,
            m_theta=0.3 + beta,
            **kw,
        )
    write_text(root / "optimization_results.yaml", "name: optuna\nbest_params: {not: read}\n")
    (root / "optuna.db").write_bytes(b"SQLite format 3\x00 not a real database")
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a small synthetic demo sweep (to preview the report).")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--search", action="store_true", help="an Optuna-style β search instead of a grid")
    args = ap.parse_args(argv)
    (search_sweep if args.search else demo_sweep)(args.out_dir)
    print(f"demo sweep written to {args.out_dir}; now: python -m analysis.report {args.out_dir}")


if __name__ == "__main__":
    main()
