"""Each claim judged across settings: the settings' effects pooled, their spread reported, and a verdict that a
single setting cannot overturn silently.

The paper states its findings over three data sets; on the embedded default a verdict can be an accident of
one world. Every per-setting claim row carries its effects (signed: positive supports the claim) with their
standard errors (analysis.claims). Per claim and scope, each effect is pooled over the settings that measured
it by Bayesian random effects (analysis.stats.bayes_random_effects: a half-normal prior on the between-setting
s.d. τ, since three settings cannot estimate it), so the spread between settings widens the interval. Its
error rates for k = 3, 5 and 8 settings are simulated in analysis.across_sim (docs/report.md).

- **holds across settings**: every effect pooled, each with P(effect > 0) ≥ 0.975 (its 95% credible
  interval above 0), and no setting's own verdict is "does not hold";
- **settings disagree**: some setting's verdict is "does not hold" while another's holds or the pool is
  positive (the evidence names them);
- **does not hold across settings**: the pool says what a setting's "does not hold" says — an effect with
  P(effect < 0) ≥ 0.975, or, for a claim whose "does not hold" is equivalence (the β claim: within ±0.02),
  every pooled interval within that margin — and no setting holds;
- **undecided across settings** otherwise;
- **cannot judge** when no effect was measured by MIN_SETTINGS settings: two settings cannot tell a
  between-setting spread from noise, and one is not "across" anything.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.stats import TAU_SCALE, Pooled, bayes_random_effects

ACROSS = "across settings"
"""The `setting` of the across-settings rows of the claims table."""
MIN_SETTINGS = 3
HOLDS_ACROSS = "holds across settings"
FAILS_ACROSS = "does not hold across settings"
DISAGREE = "settings disagree"
UNDECIDED_ACROSS = "undecided across settings"
CANNOT_JUDGE = "cannot judge"
# the per-setting verdicts (analysis.claims), spelled here to keep this module below claims
HOLDS, FAILS = "holds", "does not hold"
ACROSS_COLUMNS = ["claim", "scope", "outcome", "n_settings", "effect", "estimate", "ci_low", "ci_high",
                  "p_positive", "tau", "i2", "disagreeing", "per_setting"]
"""One row per claim, scope and effect: the pooled numbers behind each across-settings verdict (the W&B
summary run and the dashboard carry this table)."""


LEVEL = 0.975
"""A pooled effect is positive when P(μ > 0) ≥ LEVEL: its central 95% credible interval lies above 0."""


def _measured(row: dict) -> bool:
    effects = row.get("effects") or []
    return bool(effects) and all(math.isfinite(e) and math.isfinite(se) for _, e, se in effects)


def _margin(row: dict) -> float | None:
    """The row's equivalence margin: its "does not hold" means every effect within ±margin (the β claim),
    not an effect below 0."""
    m = row.get("equivalence")
    return float(m) if m is not None and math.isfinite(float(m)) else None


def _fmt(pooled: Pooled) -> str:
    return (f"{pooled.estimate:+.3g} [{pooled.ci_low:+.3g}, {pooled.ci_high:+.3g}], P(> 0) {pooled.p_positive:.3f}, "
            f"between-setting τ {pooled.tau:.3g}, I² {pooled.i2:.0%}")


def decide(positive: bool, negative: bool, contra: bool, support: bool) -> str:
    """The across-settings verdict from: every pooled effect positive (`positive`); the pool says the claim
    fails (`negative`: an effect below 0, or all within the equivalence margin); some setting's own verdict
    is "does not hold" (`contra`) or "holds" (`support`). The simulation (analysis.across_sim) calls this too."""
    if positive and not contra:
        return HOLDS_ACROSS
    if contra and (support or positive):
        return DISAGREE
    if negative and not support:
        return FAILS_ACROSS
    return UNDECIDED_ACROSS


def across_rows(rows: list[dict], settings: list[str]) -> list[dict]:
    """One claims-table row per (claim, key) of the per-setting `rows`, setting ACROSS, with `pooled`: one
    ACROSS_COLUMNS record per effect (what the verdict rests on). The rows' order does not matter."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["claim"], r["key"]), []).append(r)
    return [_across(claim, key, sorted(group, key=lambda r: r["setting"]), settings)
            for (claim, key), group in groups.items()]


def _across(claim: str, key: str, group: list[dict], settings: list[str]) -> dict:
    row = {"setting": ACROSS, "claim": claim, "scope": key, "key": key, "effects": [], "pooled": []}
    measured = [r for r in group if _measured(r)]
    names = list(dict.fromkeys(what for r in measured for what, _, _ in r["effects"]))  # every effect any setting has
    per_setting = "; ".join(
        f"{r['setting']}: {r['outcome']}" + (" (" + ", ".join(f"{e:+.3g} ± {se:.2g}" for _, e, se in r["effects"])
                                               + ")" if _measured(r) else "")
        for r in group)
    contra = [r["setting"] for r in group if r["outcome"] == FAILS]  # every setting, whatever effects it measured
    support = [r["setting"] for r in group if r["outcome"] == HOLDS]
    by_name = {name: [(e, se) for r in measured for what, e, se in r["effects"] if what == name] for name in names}
    judged = [name for name in names if len(by_name[name]) >= MIN_SETTINGS]
    if not judged:
        return {**row, "outcome": CANNOT_JUDGE,
                "evidence": f"{len(measured)} of {len(settings)} setting(s) measured it; pooling across settings "
                f"needs at least {MIN_SETTINGS}; per setting: {per_setting or 'none'}",
                "pooled": [_record(claim, key, CANNOT_JUDGE, name, None, len(by_name.get(name, [])), contra,
                                   per_setting) for name in names or ["—"]]}
    pooled = {name: bayes_random_effects(*zip(*by_name[name], strict=True)) for name in judged}
    margin = next((m for m in map(_margin, group) if m is not None), None)
    positive = len(judged) == len(names) and all(p.p_positive >= LEVEL for p in pooled.values())
    if margin is None:
        negative = any(1 - p.p_positive >= LEVEL for p in pooled.values())
    else:
        negative = all(-margin < p.ci_low and p.ci_high < margin for p in pooled.values())
    outcome = decide(positive, negative, bool(contra), bool(support))
    head = f"does not hold in {', '.join(contra)}; " if contra else ""
    short = [f"{name} ({len(by_name[name])} setting(s): too few to pool)" for name in names if name not in judged]
    evidence = (f"{head}Bayesian random effects (half-normal prior on τ, scale {TAU_SCALE:g}) over "
                + "; ".join(f"{name} ({len(by_name[name])} settings) {_fmt(p)}" for name, p in pooled.items())
                + (f"; not pooled: {', '.join(short)}" if short else "")
                + (f"; does not hold across settings means within ±{margin:g}" if margin is not None else "")
                + f"; per setting: {per_setting}")
    return {**row, "outcome": outcome, "evidence": evidence,
            "pooled": [_record(claim, key, outcome, name, pooled.get(name), len(by_name[name]), contra, per_setting)
                       for name in names]}


def _record(claim: str, key: str, outcome: str, effect: str, p: Pooled | None, k: int, contra: list[str],
            per_setting: str) -> dict:
    nums = (p.estimate, p.ci_low, p.ci_high, p.p_positive, p.tau, p.i2) if p else (math.nan,) * 6
    return dict(zip(ACROSS_COLUMNS, [claim, key, outcome, k, effect, *nums, ", ".join(contra), per_setting],
                    strict=True))


def across_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The pooled numbers behind every across-settings row of a claims table (analysis.claims.claims_table):
    ACROSS_COLUMNS, one row per claim, scope and effect; empty when it has none (one setting)."""
    if not (claims["setting"] == ACROSS).any():
        return pd.DataFrame(columns=ACROSS_COLUMNS)
    per_setting = claims[claims["setting"] != ACROSS].to_dict("records")
    settings = sorted({r["setting"] for r in per_setting})
    records = [rec for row in across_rows(per_setting, settings) for rec in row["pooled"]]
    return pd.DataFrame(records, columns=ACROSS_COLUMNS)
