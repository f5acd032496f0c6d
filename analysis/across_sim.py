"""`python -m analysis.across_sim [--draws N]`: how often the across-settings verdict (analysis.across) is
wrong, and how large an effect it finds, for k = 3, 5 and 8 settings — the table in docs/report.md.

A verdict users act on needs known error rates, and with few settings they depend on the rule more than on
the data. Each draw is one claim measured in k settings: true per-setting effects θ_i ~ N(μ, τ²), each
observed with a standard error uniform in SE_RANGE (what one default sweep gives), y_i ~ N(θ_i, se_i²).
Each setting gets its own verdict as the claims table does (holds when y − 1.96·se > 0, does not hold when
y + 1.96·se < 0), the settings are pooled, and analysis.across.decide gives the verdict. Reported: the
share of "holds across settings" when μ = 0 (false holds), at μ = +0.05 (power), and the μ that gives 80%.
The draws are shared across μ (common random numbers), so power rises with μ and the 80% point is found by
bisection. Seeded: the same command prints the same table.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.across import FAILS, HOLDS, HOLDS_ACROSS, LEVEL, decide
from analysis.stats import p_positive, random_effects

SE_RANGE = (0.02, 0.05)
KS = (3, 5, 8)
TAUS = (0.0, 0.03)
WIDE_TAU = 0.05
"""A wider spread than the brief's, for false "holds" only: the prior's scale was chosen to keep it ≤ 5% too."""
EFFECT = 0.05
POWER = 0.8
DRAWS = 20_000
SEED = 0
_CHUNK = 1_000  # draws per p_positive call: [chunk, grid, k] arrays stay near 10 MB
Z = float(scipy_stats.norm.ppf(0.975))
RULES = ("bayes", "hksj")
"""bayes: the report's rule (analysis.stats.bayes_random_effects); hksj: DerSimonian–Laird with the
Hartung–Knapp–Sidik–Jonkman t(k − 1) interval, the rule it replaced."""


def draw(k: int, tau: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n claims measured in k settings with μ = 0: (observed effects, standard errors), both [n, k]; add μ to
    the effects for another μ."""
    rng = np.random.default_rng([seed, k, round(tau * 1e6)])
    se = rng.uniform(*SE_RANGE, size=(n, k))
    return tau * rng.standard_normal((n, k)) + se * rng.standard_normal((n, k)), se


def _pooled_sides(y: np.ndarray, se: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: is the pooled effect positive, is it negative (each at the report's 95% level)?"""
    if rule == "bayes":
        p = np.concatenate([p_positive(y[i:i + _CHUNK], se[i:i + _CHUNK]) for i in range(0, len(y), _CHUNK)])
        return p >= LEVEL, 1 - p >= LEVEL
    pooled = [random_effects(a, b) for a, b in zip(y, se, strict=True)]
    return np.array([p.ci_low > 0 for p in pooled]), np.array([p.ci_high < 0 for p in pooled])


def verdicts(y: np.ndarray, se: np.ndarray, rule: str = "bayes") -> list[str]:
    """The across-settings verdict of each draw (rows of y and se), per-setting verdicts from normal intervals."""
    support, contra = (y - Z * se > 0).any(axis=1), (y + Z * se < 0).any(axis=1)
    positive, negative = _pooled_sides(y, se, rule)
    return [decide(*v) for v in zip(positive, negative, contra, support, strict=True)]


def holds_rate(y: np.ndarray, se: np.ndarray, mu: float, rule: str = "bayes") -> float:
    """Share of draws judged "holds across settings" when every effect is shifted by μ."""
    return float(np.mean([v == HOLDS_ACROSS for v in verdicts(y + mu, se, rule)]))


def effect_for_power(y: np.ndarray, se: np.ndarray, rule: str = "bayes", power: float = POWER,
                     high: float = 0.5, tol: float = 0.001) -> float:
    """The smallest μ (to `tol`) at which the share of "holds across settings" reaches `power`."""
    low = 0.0
    while high - low > tol:
        mid = (low + high) / 2
        if holds_rate(y, se, mid, rule) >= power:
            high = mid
        else:
            low = mid
    return high


def table(draws: int = DRAWS, seed: int = SEED, ks: tuple[int, ...] = KS,
          rules: tuple[str, ...] = RULES) -> pd.DataFrame:
    """One row per rule and k: false "holds" at μ = 0 and power at μ = EFFECT for each τ in TAUS, the μ for
    80% power, and false "holds" at τ = WIDE_TAU."""
    rows = []
    for rule in rules:
        for k in ks:
            row: dict = {"rule": rule, "k": k}
            for tau in TAUS:
                y, se = draw(k, tau, draws, seed)
                row[f"false holds, τ {tau:g}"] = holds_rate(y, se, 0.0, rule)
                row[f"power at +{EFFECT:g}, τ {tau:g}"] = holds_rate(y, se, EFFECT, rule)
                row[f"effect for {POWER:.0%} power, τ {tau:g}"] = effect_for_power(y, se, rule)
            row[f"false holds, τ {WIDE_TAU:g}"] = holds_rate(*draw(k, WIDE_TAU, draws, seed), 0.0, rule)
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.across_sim", description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=DRAWS, help=f"simulated claims per cell (default {DRAWS})")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    t = table(args.draws, args.seed)
    print(f"{args.draws} draws per cell, per-setting SE uniform {SE_RANGE}, seed {args.seed}; per-setting verdicts "
          f"'{HOLDS}'/'{FAILS}' from normal 95% intervals")
    print(t.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
