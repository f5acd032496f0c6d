"""Intervals and tests for accuracies, seed-aware.

Training-run variance is as large as question-sampling variance on the embedded world (5-7 points from
seed to seed at one lr), so the report's intervals and p-values come from a hierarchical bootstrap
(analysis.estimate): resample the seeds of a configuration, then the questions, shared by every
configuration of a setting so that comparisons stay paired. This module holds the pieces:
question-resampling weights, percentile intervals, the two-sided bootstrap p-value, and scipy's t, Welch
and Wilson for the few places where a closed form is the right tool. All resampling is seeded: the same
sweep gives the same report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from scipy.special import ndtr

N_RESAMPLES = 10_000
SEED = 0
_CHUNK_CELLS = 2_000_000  # resample indices in chunks of ~16 MB so 10k × many questions fits anywhere

def t_quantile_975(df: int) -> float:
    """t_{0.975, df} (scipy)."""
    if df < 1:
        raise ValueError("need at least 2 values for a t interval")
    return float(scipy_stats.t.ppf(0.975, df))


def t_interval(values: np.ndarray | list[float]) -> tuple[float, float]:
    """95% t interval of the mean over seeds (needs ≥ 2 values; wide with few seeds, honestly so)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("need at least 2 values for a t interval")
    half = t_quantile_975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson interval for a proportion (scipy's binomtest): the fallback for a run without
    predictions.jsonl."""
    if n <= 0 or not math.isfinite(accuracy):
        return math.nan, math.nan
    ci = scipy_stats.binomtest(int(round(accuracy * n)), n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


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


def question_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap weights over n questions, shape [n_resamples, n], float32, each row summing to 1.

    Row b holds how often each question was drawn in resample b, divided by n: a run's resampled
    accuracy is then one matrix product (correctness @ weights.T) for every run and every resample.
    """
    if n <= 0:
        return np.zeros((n_resamples, 0), dtype=np.float32)
    out = np.empty((n_resamples, n), dtype=np.float32)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        rows = stop - start
        flat = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        out[start:stop] = np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n) / n
    return out


def seed_resample(run_b: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over resampled seeds: run_b [R, B] (each run's accuracy in each question resample), rows [k]
    (this point's runs), idx [B, k] (the seeds drawn in each resample) → [B]."""
    b = np.arange(idx.shape[0])[:, None]
    return run_b[rows[idx], b].mean(axis=1)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (NaN samples ignored; NaNs when none is finite)."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided p-value of "Δ = 0" from bootstrap samples of Δ: 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)), with
    the +1 correction so that it is never 0; 1 when every sample is 0."""
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    le = (np.count_nonzero(d <= 0) + 1) / (d.size + 1)
    ge = (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * min(le, ge)))


def welch(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> tuple[float, float]:
    """(mean(a) − mean(b), two-sided Welch p) over seeds; p is NaN with fewer than 2 values on a side."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, math.nan
    scale = max(abs(a).max(), abs(b).max(), 1e-300)
    if a.std() <= 1e-12 * scale and b.std() <= 1e-12 * scale:  # constant within each side: no spread to test
        return diff, (1.0 if abs(diff) <= 1e-12 * scale else 0.0)
    return diff, float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


@dataclass(frozen=True)
class Pooled:
    """A random-effects estimate over settings: the mean effect, its 95% interval, and how much the settings
    differ beyond their own noise (τ: the between-setting s.d.; I²: the share of the spread that is real)."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    tau: float
    i2: float
    k: int
    p_positive: float = math.nan
    """The posterior probability that the mean effect is above 0 (bayes_random_effects only)."""


def random_effects(effects: np.ndarray | list[float], ses: np.ndarray | list[float]) -> Pooled:
    """Random-effects pooling of per-setting effects with their standard errors: DerSimonian–Laird's τ²,
    and the Hartung–Knapp–Sidik–Jonkman interval.

    The settings are a sample of the settings a claim is about, so their own spread (τ²) widens the
    interval: a claim that holds in two worlds and reverses in a third is not made certain by three
    precise but different numbers. With as few settings as a study has (three), the textbook normal (z)
    interval of DerSimonian–Laird is too narrow (τ² is poorly estimated); the HKSJ interval takes a t
    quantile with k − 1 degrees of freedom and a standard error scaled by the spread the settings show,
    never below the model's own (the ad hoc correction: the scale is at least 1). τ² stays poorly
    estimated, which is why a verdict also asks that no setting contradicts it. A zero standard error (an
    effect that did not move in any resample) is floored at 1e-9.

    The report judges with bayes_random_effects: at k = 3 this interval almost never excludes 0 (power 4.9%
    for a true +0.05, docs/report.md); its τ and I² remain the descriptive spread.
    """
    y = np.asarray(effects, dtype=float)
    v = np.maximum(np.asarray(ses, dtype=float), 1e-9) ** 2
    k = int(y.size)
    if k == 0:
        return Pooled(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    w = 1 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - fixed) ** 2))
    c = _dl_c(w)
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    w_re = 1 / (v + tau2)
    mu = float(np.sum(w_re * y) / np.sum(w_re))
    if k > 1:  # HKSJ: t with k - 1 degrees of freedom, the variance scaled by the settings' own spread (≥ 1)
        scale = max(1.0, float(np.sum(w_re * (y - mu) ** 2)) / (k - 1))
        se, quantile = float(math.sqrt(scale / np.sum(w_re))), float(scipy_stats.t.ppf(0.975, k - 1))
    else:
        se, quantile = float(math.sqrt(1 / np.sum(w_re))), float(scipy_stats.norm.ppf(0.975))
    i2 = max(0.0, (q - (k - 1)) / q) if k > 1 and q > 0 else 0.0
    return Pooled(mu, se, mu - quantile * se, mu + quantile * se, math.sqrt(tau2), i2, k)


def _dl_c(w: np.ndarray) -> float:
    """DerSimonian–Laird's c = Σw − Σw²/Σw, as 2·Σ_{i<j} w_i·w_j / Σw: the textbook form cancels to a wrong
    value when one weight is huge (a floored standard error), this one has no subtraction."""
    others = np.concatenate([[0.0], np.cumsum(w)[:-1]])  # Σ_{j<i} w_j
    return float(2 * np.sum(w * others) / np.sum(w))


TAU_SCALE = 0.04
"""The half-normal prior's scale on the between-setting s.d. τ of bayes_random_effects (accuracy points:
prior median τ 0.027, 95% below 0.078). Chosen by simulation (analysis.across_sim, docs/report.md): the
smallest scale whose false "holds across settings" stays ≤ 5% up to τ = 0.05 for k = 3..8."""
TAU_GRID = 161
"""Points of the τ quadrature grid, 0 to 5 prior scales (the prior's density there is e^-12.5 of its peak)."""


def _tau_posterior(y: np.ndarray, v: np.ndarray, tau_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For effects y and variances v, both [n, k]: the posterior weights of the τ grid [n, m], and μ's
    conditional posterior mean and precision given each τ [n, m] (flat prior on μ)."""
    tau = np.linspace(0.0, 5 * tau_scale, TAU_GRID)
    step = np.full(TAU_GRID, tau[1])
    step[[0, -1]] /= 2  # trapezoid rule
    var = v[:, None, :] + tau[None, :, None] ** 2  # [n, m, k]
    w = 1 / var
    precision = w.sum(-1)
    mu = (w * y[:, None, :]).sum(-1) / precision
    q = (w * (y[:, None, :] - mu[..., None]) ** 2).sum(-1)
    # the marginal (restricted) likelihood of τ: μ integrated out under its flat prior
    loglik = -0.5 * (np.log(precision) + np.log(var).sum(-1) + q)
    post = np.exp(loglik - loglik.max(axis=1, keepdims=True)) * np.exp(-0.5 * (tau / tau_scale) ** 2) * step
    return post / post.sum(axis=1, keepdims=True), mu, precision


def p_positive(effects: np.ndarray, ses: np.ndarray, tau_scale: float = TAU_SCALE) -> np.ndarray:
    """P(mean effect > 0 | data) of bayes_random_effects for many pools at once: effects and ses [n, k] → [n]
    (what the simulation of the across-settings verdict calls; the report calls it through
    bayes_random_effects)."""
    y = np.asarray(effects, dtype=float)
    v = np.maximum(np.asarray(ses, dtype=float), 1e-9) ** 2
    post, mu, precision = _tau_posterior(y, v, tau_scale)
    return (post * ndtr(mu * np.sqrt(precision))).sum(axis=1)


def bayes_random_effects(effects: np.ndarray | list[float], ses: np.ndarray | list[float],
                         tau_scale: float = TAU_SCALE) -> Pooled:
    """Bayesian random-effects pooling for few settings: effect_i ~ N(θ_i, se_i²), θ_i ~ N(μ, τ²), a flat
    prior on μ and a half-normal(tau_scale) prior on τ, integrated on a grid (deterministic, no sampling).

    Why: with three settings τ cannot be estimated from the data, and the interval must assume something
    about it. Hartung–Knapp with t(k − 1) assumes nothing and so almost never decides (power 4.9% at k = 3
    for +0.05); a plug-in τ̂ = 0 is overconfident. A weakly informative prior on τ is what the literature
    recommends for very few studies (Friede et al. 2017, Röver et al. 2021, Bender et al. 2018); its
    error rates are simulated in analysis.across_sim. Returns the posterior median of μ, its central 95%
    credible interval and P(μ > 0); τ and I² are DerSimonian–Laird's, what the data alone say of the spread
    (with three settings the posterior of τ is mostly the prior, not worth quoting as a finding).
    """
    y = np.asarray(effects, dtype=float)
    k = int(y.size)
    if k == 0:
        return Pooled(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    v = np.maximum(np.asarray(ses, dtype=float), 1e-9) ** 2
    post, mu, precision = _tau_posterior(y[None], v[None], tau_scale)
    post, mu, sd = post[0], mu[0], 1 / np.sqrt(precision[0])

    def cdf(x: float) -> float:
        return float(np.sum(post * ndtr((x - mu) / sd)))

    lo_edge, hi_edge = float(np.min(mu - 10 * sd)), float(np.max(mu + 10 * sd))
    median, ci_low, ci_high = (_solve(cdf, p, lo_edge, hi_edge) for p in (0.5, 0.025, 0.975))
    mean = float(np.sum(post * mu))
    se = math.sqrt(float(np.sum(post * (sd**2 + (mu - mean) ** 2))))
    spread = random_effects(y, np.sqrt(v))
    return Pooled(median, se, ci_low, ci_high, spread.tau, spread.i2, k, 1 - cdf(0.0))


def _solve(cdf, p: float, lo: float, hi: float) -> float:
    """x with cdf(x) = p by bisection (cdf increasing on [lo, hi])."""
    for _ in range(100):
        mid = (lo + hi) / 2
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
