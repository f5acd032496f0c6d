"""Accuracy per category and per subject of each method's best configuration, on the report split.

Users of FinanceIQ, FinEval and ceval-exam read results per exam subject, and C-Eval per category
(STEM, Social Sciences, Humanities, Other: the data set's `mapping.json`, recorded by each job in
result.json's `subject_info`). For every setting whose questions carry a subject, each method's best
configuration (the peak of `analysis.estimate`, chosen on the selection split) is scored on the
report-split questions of each subject and each category, with question counts and a 95% interval
from the same kind of bootstrap as the rest of the report (its ok seeds resampled, then the questions
of the group). A diverged seed has no per-question predictions and is left out here. A subject with
fewer than `FEW_QUESTIONS` questions says so: its interval is too wide to rank it against another.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from analysis import method_name, method_sort_key
from analysis.estimate import Estimates
from analysis.rundirs import Sweep
from analysis.stats import percentile_interval, question_weights, seed_resample

N_RESAMPLES = 2000
FEW_QUESTIONS = 20

SUBJECT_COLUMNS = ["setting", "method", "config", "category", "subject", "name", "n_questions", "n_seeds",
                   "accuracy", "ci_low", "ci_high", "note"]
CATEGORY_COLUMNS = ["setting", "method", "config", "category", "n_subjects", "n_questions", "n_seeds",
                    "accuracy", "ci_low", "ci_high", "note"]


def _bootstrap(correct: np.ndarray, rng: np.random.Generator, n_resamples: int = N_RESAMPLES) -> np.ndarray:
    """Resampled mean accuracy of a [seeds × questions] matrix: seeds, then questions, with replacement,
    resampled as analysis.estimate resamples every point."""
    k, n = correct.shape
    per_seed = correct.astype(np.float32) @ question_weights(n, n_resamples, rng).T  # [k, B]
    return seed_resample(per_seed, np.arange(k), rng.integers(0, k, size=(n_resamples, k)))


def _row(correct: np.ndarray, rng: np.random.Generator) -> dict:
    lo, hi = percentile_interval(_bootstrap(correct, rng))
    n = correct.shape[1]
    note = f"only {n} questions: too few to rank this group" if n < FEW_QUESTIONS else ""
    return {"n_questions": n, "n_seeds": correct.shape[0], "accuracy": float(correct.mean()),
            "ci_low": lo, "ci_high": hi, "note": note}


def subject_tables(est: Estimates, sweep: Sweep) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per category, per subject) accuracy of each method's best configuration; empty frames when no
    setting has subjects."""
    subject_rows: list[dict] = []
    category_rows: list[dict] = []
    for (setting, method), peak in sorted(est.peaks.items(), key=lambda kv: (kv[0][0], method_sort_key(kv[0][1]))):
        if peak is None:
            continue
        runs = [r for r in peak.runs if sweep.predictions(r) is not None and sweep.subjects(r) is not None]
        if not runs:
            continue
        ids = sweep.predictions(runs[0]).index
        for r in runs[1:]:
            ids = ids.intersection(sweep.predictions(r).index)
        split = sweep.split(runs[0])
        if split is not None:
            ids = ids[(split.reindex(ids) == "report").to_numpy()]
        if not len(ids):
            continue
        correct = np.vstack([sweep.predictions(r).reindex(ids).to_numpy() for r in runs])
        subjects = sweep.subjects(runs[0]).reindex(ids).to_numpy()
        info: dict[str, dict[str, str]] = {}
        for r in runs:
            info.update(sweep.subject_info.get(r, {}))
        categories = np.array([info.get(s, {}).get("category") or "" for s in subjects], dtype=object)
        rng = np.random.default_rng(zlib.crc32(f"{setting}|{method}".encode()))
        base = {"setting": setting, "method": method_name(method),
                "config": f"lr {peak.lr:g}" + ("" if math.isnan(peak.beta) else f", β {peak.beta:g}")}
        for subject in sorted(set(subjects), key=lambda x: (info.get(x, {}).get("category") or "", x)):
            mask = subjects == subject
            subject_rows.append({**base, "category": info.get(subject, {}).get("category") or "",
                                 "subject": subject, "name": info.get(subject, {}).get("name", subject),
                                 **_row(correct[:, mask], rng)})
        if (categories != "").any():
            for category in sorted(set(categories) - {""}):
                mask = categories == category
                category_rows.append({**base, "category": category, "n_subjects": len(set(subjects[mask])),
                                      **_row(correct[:, mask], rng)})
    return pd.DataFrame(category_rows, columns=CATEGORY_COLUMNS), pd.DataFrame(subject_rows, columns=SUBJECT_COLUMNS)
