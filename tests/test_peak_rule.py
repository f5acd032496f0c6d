"""trainers.data.selection's peak rule: ties go to the lower β, then the lower lr, float noise is a tie,
and the sweep's refinement and the report's estimates choose the same peak from the same run directories."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analysis.estimate import estimate
from analysis.rundirs import load_sweep
from sweep.grid import GridPoint
from sweep.refine import peaks, read_scores
from synthetic_runs import write_run
from trainers.data.selection import TIE_ATOL, best_of, peak, run_score


def test_best_of_keeps_the_first_of_ties_within_float_noise_and_never_picks_nan():
    assert best_of([0.5, 0.7, 0.7 - TIE_ATOL / 10, 0.6]) == [1, 2]
    assert best_of([0.7 - TIE_ATOL * 10, 0.7]) == [1]  # a real difference, however small, is not a tie
    assert best_of([math.nan, 0.2, 0.1]) == [1]
    assert best_of([math.nan]) == []


def test_peak_takes_the_lower_beta_then_the_lower_lr_on_ties():
    curve = {
        1e-3: {0.5: 0.55, 0.1: 0.55 + 1e-12},  # β tie at float noise: the lower β, 0.1
        1e-2: {0.1: 0.55 - 1e-12, 0.5: 0.40},  # ties 1e-3's best: the lower lr wins
        1e-4: {0.1: 0.30, 0.5: 0.31},
    }
    assert peak(curve) == (1e-3, 0.1)
    assert peak({3e-4: {None: 0.4}, 1e-3: {None: 0.6}}) == (1e-3, None)


def test_run_score_counts_a_diverged_run_as_the_base_model_and_a_failed_one_as_missing():
    assert run_score({"status": "ok", "accuracy": 0.6, "select_accuracy": 0.55}) == 0.55
    assert run_score({"status": "ok", "accuracy": 0.6, "select_accuracy": None}) == 0.6
    assert run_score({"status": "diverged", "accuracy": None, "base_accuracy": 0.25}) == 0.25
    assert run_score({"status": "failed", "accuracy": None, "base_accuracy": 0.25}) is None
    assert run_score(None) is None


def _correct(k: int, n: int = 200) -> np.ndarray:
    return np.arange(n) < k


def test_refinement_and_report_choose_the_same_peak(tmp_path: Path):
    """Ties between β at one lr, between two lrs, a diverged seed and a failed one: the sweep's next round
    and the report's threshold read the same run directories and must name the same (lr, β)."""
    runs = {  # (method, lr, β, seed) -> correct answers of 200, "diverged" or "failed"
        ("minor_sft", 1e-4, 0.1, 0): 60, ("minor_sft", 1e-4, 0.1, 1): 62,
        ("minor_sft", 1e-4, 0.5, 0): 64, ("minor_sft", 1e-4, 0.5, 1): 58,
        ("minor_sft", 1e-3, 0.1, 0): 120, ("minor_sft", 1e-3, 0.1, 1): 100,  # mean 110
        ("minor_sft", 1e-3, 0.5, 0): 110, ("minor_sft", 1e-3, 0.5, 1): 110,  # mean 110: tie, lower β wins
        ("minor_sft", 1e-2, 0.1, 0): 110, ("minor_sft", 1e-2, 0.1, 1): "failed",  # mean 110: tie, lower lr wins
        ("minor_sft", 1e-2, 0.5, 0): "diverged", ("minor_sft", 1e-2, 0.5, 1): 150,  # (50 + 150) / 2 = 100
        ("sft", 1e-4, None, 0): 70, ("sft", 1e-4, None, 1): 70,
        ("sft", 1e-3, None, 0): 90, ("sft", 1e-3, None, 1): "diverged",  # (90 + 50) / 2 = 70: tie with 1e-4
        ("sft", 1e-2, None, 0): 40, ("sft", 1e-2, None, 1): 42,
    }
    points, run_dirs = [], []
    for (method, lr, beta, seed), outcome in runs.items():
        run_dir = tmp_path / method / f"lr{lr}_beta{beta}_seed{seed}"
        if isinstance(outcome, str):
            write_run(run_dir, method=method, lr=lr, beta=beta, seed=seed, status=outcome, base_accuracy=0.25)
        else:
            write_run(run_dir, method=method, lr=lr, beta=beta, seed=seed, correct=_correct(outcome),
                      base_accuracy=0.25)
        points.append(GridPoint(method, lr, beta, seed))
        run_dirs.append(run_dir)

    refined = {m: (p.lr, p.beta) for m, p in peaks(read_scores(points, run_dirs)).items()}
    est = estimate(load_sweep(tmp_path), n_resamples=50)
    reported = {}
    for (_, method), p in est.peaks.items():
        reported[method] = (p.lr, None if math.isnan(p.beta) else p.beta)

    assert refined == {"minor_sft": (1e-3, 0.1), "sft": (1e-4, None)}
    assert reported == refined


def test_report_estimates_call_the_one_peak_rule(tmp_path: Path, monkeypatch):
    """analysis/estimate.py re-codes no part of the rule: the peak is `peak`'s, each resample's argmax `best_of`'s."""
    import analysis.estimate as E

    for lr, k in ((1e-4, 60), (1e-3, 110), (1e-2, 80)):
        for seed in (0, 1):
            write_run(tmp_path / f"{lr}-{seed}", method="sft", lr=lr, seed=seed, correct=_correct(k + seed))
    calls = {"peak": 0, "best_of": 0}

    def counted(name, rule):
        def call(*args):
            calls[name] += 1
            return rule(*args)
        return call

    monkeypatch.setattr(E, "peak", counted("peak", peak))
    monkeypatch.setattr(E, "best_of", counted("best_of", best_of))
    est = estimate(load_sweep(tmp_path), n_resamples=50)
    assert est.peaks[("world", "sft")].lr == 1e-3
    assert calls["peak"] == 1 and calls["best_of"] >= 50  # once per method; once per resample at least
