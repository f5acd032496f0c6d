"""Each claim judged across settings: the settings' effects pooled, their spread reported, and a verdict that a
single setting cannot overturn silently.

The paper states its findings over three data sets; on the embedded default a verdict can be an accident of
one world. Every per-setting claim row carries its effects (signed: positive supports the claim) with their
standard errors (analysis.claims). Per claim and scope, the settings' effects are pooled by random effects
(DerSimonian–Laird τ² with the Hartung–Knapp–Sidik–Jonkman interval, analysis.stats.random_effects), so the
between-setting spread τ widens the interval.

- **holds across settings**: every pooled interval is above 0 and no setting's own verdict is "does not
  hold";
- **settings disagree**: some setting's verdict is "does not hold" while another's holds or the pool is
  positive (the evidence names them);
- **does not hold across settings**: a pooled interval is below 0 and no setting holds;
- **undecided across settings** otherwise;
- **cannot judge** with fewer than MIN_SETTINGS settings that measured the effect: two settings cannot
  tell a between-setting spread from noise, and one is not "across" anything.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.stats import Pooled, random_effects

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
ACROSS_COLUMNS = ["claim", "scope", "outcome", "n_settings", "effect", "estimate", "ci_low", "ci_high", "tau",
                  "i2", "disagreeing", "per_setting"]
"""One row per claim, scope and effect: the pooled numbers behind each across-settings verdict (the W&B
summary run and the dashboard carry this table)."""


def _measured(row: dict) -> bool:
    effects = row.get("effects") or []
    return bool(effects) and all(math.isfinite(e) and math.isfinite(se) for _, e, se in effects)


def _fmt(pooled: Pooled) -> str:
    return (f"{pooled.estimate:+.3g} [{pooled.ci_low:+.3g}, {pooled.ci_high:+.3g}], between-setting τ "
            f"{pooled.tau:.3g}, I² {pooled.i2:.0%}")


def across_rows(rows: list[dict], settings: list[str]) -> list[dict]:
    """One claims-table row per (claim, key) of the per-setting `rows`, setting ACROSS, with `pooled`: one
    ACROSS_COLUMNS record per effect (what the verdict rests on)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["claim"], r["key"]), []).append(r)
    return [_across(claim, key, group, settings) for (claim, key), group in groups.items()]


def _across(claim: str, key: str, group: list[dict], settings: list[str]) -> dict:
    row = {"setting": ACROSS, "claim": claim, "scope": key, "key": key, "effects": [], "pooled": []}
    measured = [r for r in group if _measured(r)]
    names = [what for what, _, _ in measured[0]["effects"]] if measured else []
    measured = [r for r in measured if [w for w, _, _ in r["effects"]] == names]
    per_setting = "; ".join(
        f"{r['setting']}: {r['outcome']}" + (" (" + ", ".join(f"{e:+.3g} ± {se:.2g}" for _, e, se in r["effects"])
                                               + ")" if _measured(r) else "")
        for r in group)
    contra = [r["setting"] for r in measured if r["outcome"] == FAILS]
    support = [r["setting"] for r in measured if r["outcome"] == HOLDS]
    if len(measured) < MIN_SETTINGS:
        return {**row, "outcome": CANNOT_JUDGE,
                "evidence": f"{len(measured)} of {len(settings)} setting(s) measured it; pooling across settings "
                f"needs at least {MIN_SETTINGS}; per setting: {per_setting or 'none'}",
                "pooled": [_record(claim, key, CANNOT_JUDGE, name, None, len(measured), contra, per_setting)
                           for name in names or ["—"]]}
    pooled = [random_effects([r["effects"][i][1] for r in measured], [r["effects"][i][2] for r in measured])
              for i in range(len(names))]
    positive = all(p.ci_low > 0 for p in pooled)
    negative = any(p.ci_high < 0 for p in pooled)
    if positive and not contra:
        outcome = HOLDS_ACROSS
    elif contra and (support or positive):
        outcome = DISAGREE
    elif negative and not support:
        outcome = FAILS_ACROSS
    else:
        outcome = UNDECIDED_ACROSS
    head = f"does not hold in {', '.join(contra)}; " if contra else ""
    evidence = (f"{head}random effects (DerSimonian–Laird, Hartung–Knapp) over {len(measured)} settings: "
                + "; ".join(f"{name} {_fmt(p)}" for name, p in zip(names, pooled, strict=True))
                + f"; per setting: {per_setting}")
    return {**row, "outcome": outcome, "evidence": evidence,
            "pooled": [_record(claim, key, outcome, name, p, len(measured), contra, per_setting)
                       for name, p in zip(names, pooled, strict=True)]}


def _record(claim: str, key: str, outcome: str, effect: str, p: Pooled | None, k: int, contra: list[str],
            per_setting: str) -> dict:
    nums = (p.estimate, p.ci_low, p.ci_high, p.tau, p.i2) if p else (math.nan,) * 5
    return dict(zip(ACROSS_COLUMNS, [claim, key, outcome, k, effect, *nums, ", ".join(contra), per_setting],
                    strict=True))


def across_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The pooled numbers behind every across-settings row of a claims table (analysis.claims.claims_table):
    ACROSS_COLUMNS, one row per claim, scope and effect."""
    per_setting = claims[claims["setting"] != ACROSS].to_dict("records")
    settings = sorted({r["setting"] for r in per_setting})
    records = [rec for row in across_rows(per_setting, settings) for rec in row["pooled"]]
    return pd.DataFrame(records, columns=ACROSS_COLUMNS)
