"""analysis.stats: intervals and the paired bootstrap on constructed data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.stats import (
    bootstrap_ci,
    bootstrap_p,
    paired_bootstrap,
    percentile_interval,
    question_weights,
    t_interval,
    t_quantile_975,
    welch,
    wilson_interval,
)


def test_paired_bootstrap_known_difference():
    # 200 questions: A right on 60, B right on the same 60 plus 60 more -> delta exactly 0.30.
    a = np.zeros(200)
    a[:60] = 1
    b = np.zeros(200)
    b[:120] = 1
    res = paired_bootstrap(a, b)
    assert res.delta == pytest.approx(0.30)
    assert res.n == 200
    assert 0 < res.ci_low < 0.30 < res.ci_high
    assert res.significant
    assert res.p_value < 0.001  # the +1 correction: 2/(10000+1)
    assert res.p_value > 0


def test_paired_bootstrap_identical_predictions_is_zero_with_p_one():
    a = np.array([1, 0, 1, 1, 0] * 40, dtype=float)
    res = paired_bootstrap(a, a.copy())
    assert res.delta == 0.0
    assert (res.ci_low, res.ci_high) == (0.0, 0.0)
    assert res.p_value == 1.0
    assert not res.significant


def test_paired_bootstrap_direction_and_seeded():
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.6).astype(float)
    b = (rng.random(300) < 0.4).astype(float)
    r1, r2 = paired_bootstrap(a, b), paired_bootstrap(a, b)
    assert r1 == r2  # same seed, same answer
    assert r1.delta == pytest.approx(b.mean() - a.mean())
    assert r1.ci_high < 0


def test_paired_bootstrap_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 0], [1, 0, 1])


def test_t_interval_two_seeds():
    lo, hi = t_interval([0.5, 0.7])
    half = 12.706 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)
    assert (lo, hi) == pytest.approx((0.6 - half, 0.6 + half), rel=1e-4)
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=1e-3)  # scipy, not a table's 1.96
    with pytest.raises(ValueError):
        t_interval([0.5])


def test_bootstrap_ci_degenerate_and_covering():
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0)
    x = np.r_[np.ones(100), np.zeros(100)]
    lo, hi = bootstrap_ci(x)
    assert lo < 0.5 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(200), abs=0.02)


def test_wilson_interval():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_question_weights_are_bootstrap_draws():
    w = question_weights(50, 400, np.random.default_rng(0))
    assert w.shape == (400, 50)
    assert np.allclose(w.sum(axis=1), 1.0)
    counts = w * 50
    assert np.allclose(counts, counts.round())  # each question drawn a whole number of times
    assert counts.mean(axis=0) == pytest.approx(np.ones(50), abs=0.2)  # every question equally likely
    x = (np.arange(50) < 20).astype(np.float32)  # accuracy 0.4
    means = w @ x
    assert means.std() == pytest.approx(np.sqrt(0.4 * 0.6 / 50), rel=0.15)


def test_bootstrap_p_and_percentile_interval():
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    lo, hi = percentile_interval(np.r_[np.arange(1000.0), np.nan])
    assert lo == pytest.approx(24.975) and hi == pytest.approx(974.025)


def test_welch_over_seeds():
    diff, p = welch([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert diff == pytest.approx(-1.0) and p < 0.001
    assert np.isnan(welch([1.0], [2.0, 2.1])[1])  # one seed: no test
