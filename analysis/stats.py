"""Intervals and paired tests for accuracies.

Seed-to-seed noise on the embedded world is ±5–7 points (DESIGN §4), so every accuracy in the report
carries an interval: over seeds when there are several, by bootstrap over questions when there is one.
Method comparisons are paired over the same questions (predictions.jsonl), which removes the
question-difficulty variance that unpaired intervals would keep. All resampling is seeded: the same
sweep gives the same report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 10_000
SEED = 0
_CHUNK_CELLS = 2_000_000  # resample indices in chunks of ~16 MB so 10k × many questions fits anywhere

# Two-sided 95% Student-t quantiles t_{0.975, df}; no scipy dependency for one table.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, from the table (the next smaller tabulated df above 30: conservative); 1.96 beyond."""
    if df < 1:
        raise ValueError("need at least 2 values for a t interval")
    if df in _T975:
        return _T975[df]
    smaller = [k for k in _T975 if k < df]
    return _T975[max(smaller)] if df <= 120 else 1.960


def t_interval(values: np.ndarray | list[float]) -> tuple[float, float]:
    """95% t interval of the mean over seeds (needs ≥ 2 values; wide with few seeds, honestly so)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("need at least 2 values for a t interval")
    half = t_quantile_975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson interval for a proportion: the fallback when a single run has no predictions.jsonl."""
    if n <= 0 or not math.isfinite(accuracy):
        return math.nan, math.nan
    z = 1.959964
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _bootstrap_means(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement) of x, computed in memory-bounded chunks."""
    rng = np.random.default_rng(seed)
    n = x.size
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: np.ndarray | list[float], n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile 95% interval of the mean by bootstrap over questions (per-question correctness)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    means = _bootstrap_means(x, n_resamples, seed)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """Δ = mean(b) − mean(a) over the shared questions, with its paired-bootstrap 95% interval."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(
    a: np.ndarray | list[float], b: np.ndarray | list[float], n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> PairedResult:
    """Paired bootstrap of the accuracy difference b − a over the same questions.

    a[i] and b[i] are the correctness (0/1, or the mean over seeds) of the same question. Questions are
    resampled with replacement, keeping each pair together. The two-sided p-value inverts the
    percentile interval: p = 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)) with the +1 correction, so it is never 0 and
    is exactly 1 when the two prediction sets are identical.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("no shared questions to compare")
    d = b - a
    means = _bootstrap_means(d, n_resamples, seed)
    lo, hi = np.quantile(means, [0.025, 0.975])
    le = (np.count_nonzero(means <= 0) + 1) / (n_resamples + 1)
    ge = (np.count_nonzero(means >= 0) + 1) / (n_resamples + 1)
    p = min(1.0, 2 * min(le, ge))
    return PairedResult(float(d.mean()), float(lo), float(hi), float(p), int(d.size))
