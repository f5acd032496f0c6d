"""The paper's findings (docs/report.md) checked against a sweep, each decided with its uncertainty.

Every row says "holds", "does not hold" or "undecided", and always the numbers behind the verdict (an
interval, a probability or a p-value), so a reader can disagree with the rule. One seed decides
nothing: a claim whose deciding configurations have fewer than MIN_SEEDS scored seeds is undecided,
whatever its numbers. Accuracies are on the report split; choices were made on the selection split.

1. threshold (per method): the peak's accuracy beats the base model and the accuracy at the next
   higher lr, both with 95% hierarchical intervals above 0. A peak on an edge of the grid is undecided.
2. threshold lr: from P(threshold of MinorSFT > threshold of SFT) over the resamples (vertex redone in
   each): holds at ≥ 0.95, does not hold when P(lower) ≥ 0.95.
3. best method: MinorSFT's best configuration against each baseline's, paired, per setting and, with
   several settings, averaged over them.
4. deviation: train mθ (mean over the last quarter of logged steps) and the final eval |mθ| (forgetting
   cannot make it small), Welch's test over seeds, at each method's best configuration and at SFT's
   best lr.
5. β needs tuning (per β method): at its best lr that ran several β, the β chosen on the selection split
   against the worst β; holds when Δ's interval is above 0, does not hold when it lies within ±EQUIVALENCE.

Each claim is judged per setting, then, with several settings, once more *across settings* (analysis.across):
every row carries its effects (positive: in the claim's direction) with their standard errors, and the
settings' effects are pooled by random effects.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import method_name, method_sort_key
from analysis.across import across_rows
from analysis.estimate import MIN_SEEDS, Estimates
from analysis.search import search_keys
from analysis.stats import bootstrap_p, percentile_interval, welch
from analysis.tables import fmt_beta, fmt_lr, paired_delta
from trainers.runtime.run_dir import FAILED, STOPPED

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"
NOT_MEASURED = UNDECIDED  # a claim the sweep cannot measure is undecided; the evidence says why
LEVEL = 0.95
ALPHA = 0.05
EQUIVALENCE = 0.02
"""Claim 5: β does not need tuning when the whole interval of Δ(chosen β − worst β) is within ±2 points."""
CLAIM_THRESHOLD = "improves up to a learning-rate threshold and degrades beyond it"
CLAIM_BEST = "MinorSFT is the best method"
CLAIM_LR = "MinorSFT's threshold learning rate is higher than raw SFT's"
CLAIM_DEVIATION = "DPO-derived losses deviate less (lower mθ) than raw SFT"
CLAIM_BETA = "β needs tuning"
CLAIM_COLUMNS = ["setting", "claim", "scope", "outcome", "evidence"]
EFFECT_COLUMNS = ["key", "effects", "equivalence"]
"""Kept beside CLAIM_COLUMNS for pooling: `key` is the scope without the setting's own numbers (rows of one
claim in different settings share it); `effects` is a list of (what, effect, standard error), each effect
signed so that positive supports the claim; `equivalence` is the margin of a claim whose "does not hold"
means every effect within ±margin (the β claim), None where it means an effect below 0. A bootstrap effect's
standard error is the s.d. of its resamples; one read off a table's 95% percentile interval is its width / 3.92;
Welch's is the usual one."""
Z95_WIDTH = 3.92  # a normal 95% interval is 2 × 1.96 standard errors wide


def _acc(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _sd(resamples: np.ndarray) -> float:
    """The standard error of a bootstrap estimate: the s.d. of its finite resamples."""
    x = np.asarray(resamples, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if x.size > 1 else math.nan


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:+.3f}, {hi:+.3f}]"


def _by_interval(lo: float, hi: float) -> str:
    return HOLDS if lo > 0 else (FAILS if hi < 0 else UNDECIDED)


def claims_table(est: Estimates, sweep, best: pd.DataFrame, paired: pd.DataFrame,
                 beta_table: pd.DataFrame) -> pd.DataFrame:
    """All claims for every setting of the sweep, then, with several settings, each claim across settings
    (analysis.across); columns CLAIM_COLUMNS + EFFECT_COLUMNS."""
    rows = _setting_rows(est, sweep, best, paired, beta_table)
    across = across_rows(rows, sorted(est.settings)) if len(est.settings) > 1 else []
    return pd.DataFrame(rows + across, columns=CLAIM_COLUMNS + EFFECT_COLUMNS)


def _setting_rows(est: Estimates, sweep, best: pd.DataFrame, paired: pd.DataFrame,
                  beta_table: pd.DataFrame) -> list[dict]:
    rows: list[dict] = []
    searched = search_keys(sweep.runs)
    for setting in sorted(est.settings):
        methods = sorted((m for s, m in est.curves if s == setting), key=method_sort_key)
        for m in methods:
            if (setting, m) in searched:
                rows.append(_search_claim(setting, m, sweep.runs))
            else:
                rows.append(_threshold_claim(est, setting, m))
        if any((setting, m) in searched for m in ("minor_sft", "sft")):
            rows.append({"setting": setting, "claim": CLAIM_LR, "scope": "MinorSFT vs SFT", "outcome": UNDECIDED,
                         "evidence": "a search, not an lr grid: no threshold"})
        else:
            rows.append(_lr_claim(est, setting))
        rows.append(_best_claim(setting, best[best["setting"] == setting], paired[paired["setting"] == setting]))
        for m in ("dpo_sft", "minor_sft"):
            rows.extend(_deviation_claims(est, setting, m))
        for m in methods:
            if (setting, m) not in searched:
                rows.extend(_beta_claim(est, setting, m, beta_table))
    for row in rows:
        row.setdefault("key", row["scope"])
        row.setdefault("effects", [])
        row.setdefault("equivalence", None)
    return rows


def _search_claim(setting: str, method: str, runs: pd.DataFrame) -> dict:
    """A search samples β per trial instead of running every β at every lr: no threshold to check."""
    r = runs[(runs["setting"] == setting) & (runs["method"] == method)]
    return {"setting": setting, "claim": f"each method {CLAIM_THRESHOLD}", "scope": method_name(method),
            "outcome": UNDECIDED,
            "evidence": f"a search ({len(r)} trials, {r['beta'].nunique()} β values at {r['lr'].nunique()} lr(s)): "
            "β is sampled per trial, not run at every lr; run an lr grid"}


def _point(est: Estimates, pid: int) -> pd.Series:
    return est.points.loc[est.points["pid"] == pid].iloc[0]


def _curve_value(r) -> str:
    """A curve point in a claim's evidence: its selection accuracy, or what stands in for one."""
    if r.status == STOPPED:
        return f"{STOPPED} at step {r.stop_step:.0f} ({_acc(r.stop_accuracy)} then)"
    return str(FAILED) if r.status == FAILED else _acc(r.accuracy)


def _threshold_claim(est: Estimates, setting: str, method: str) -> dict:
    row = {"setting": setting, "claim": f"each method {CLAIM_THRESHOLD}", "scope": method_name(method)}
    curve, peak = est.curves[(setting, method)], est.peaks[(setting, method)]
    path = ", ".join(f"{fmt_lr(r.lr)}: {_curve_value(r)}" for r in curve.itertuples())
    if peak is None:
        return {**row, "outcome": UNDECIDED, "evidence": f"no scored run ({path})"}
    head = f"peak lr {fmt_lr(peak.lr)} (selection lr→acc {path})"
    if peak.bracket:
        return {**row, "outcome": UNDECIDED, "evidence": f"{peak.bracket}; {head}"}
    if peak.next_pid is None:  # the lr above the peak was stopped: past the threshold, but no full-length drop
        return {**row, "outcome": UNDECIDED,
                "evidence": f"the next lr {fmt_lr(peak.bracket_high)} was stopped early by the sweeper: no full-length "
                            f"accuracy to measure the drop with; {head}"}
    p, nxt = _point(est, peak.pid), _point(est, peak.next_pid)
    base = float(p["base_accuracy"])
    up_b = est.report_b[peak.pid].astype(float) - base
    up_lo, up_hi = percentile_interval(up_b)
    down, down_b = paired_delta(est, peak.pid, peak.next_pid)
    down_lo, down_hi = percentile_interval(down_b)
    seeds = min(int(p["n_scored"]), int(nxt["n_scored"]))
    row["effects"] = [("peak − base", peak.accuracy - base, _sd(up_b)), ("peak − next lr", down, _sd(down_b))]
    evidence = (
        f"report split: peak {_acc(peak.accuracy)} − base {_acc(base)} = {peak.accuracy - base:+.3f} "
        f"{_ci(up_lo, up_hi)}; peak − next lr {fmt_lr(peak.next_lr)} = {down:+.3f} {_ci(down_lo, down_hi)}, "
        f"p={bootstrap_p(down_b):.3g}; {seeds}+ seeds; {head}"
    )
    if seeds < MIN_SEEDS:
        return {**row, "outcome": UNDECIDED, "evidence": f"one seed decides nothing; {evidence}"}
    a, b = _by_interval(up_lo, up_hi), _by_interval(down_lo, down_hi)
    outcome = HOLDS if a == b == HOLDS else (FAILS if FAILS in (a, b) else UNDECIDED)
    return {**row, "outcome": outcome, "evidence": evidence}


def _lr_claim(est: Estimates, setting: str) -> dict:
    row = {"setting": setting, "claim": CLAIM_LR, "scope": "MinorSFT vs SFT"}
    minor, sft = est.peaks.get((setting, "minor_sft")), est.peaks.get((setting, "sft"))
    if minor is None or sft is None:
        missing = " and ".join(n for n, p in (("MinorSFT", minor), ("SFT", sft)) if p is None)
        return {**row, "outcome": UNDECIDED, "evidence": f"not measured: no scored run of {missing}"}
    gt, eq = est.p_threshold_greater(setting, "minor_sft", "sft")
    lt = 1 - gt - eq

    def desc(name, p):
        edge = f", {p.bracket}" if p.bracket else ""
        return (f"{name} vertex {fmt_lr(p.vertex_lr)} [{fmt_lr(p.lr_ci_low)}, {fmt_lr(p.lr_ci_high)}] "
                f"(argmax {fmt_lr(p.lr)}{edge})")

    evidence = (f"P(MinorSFT > SFT) = {gt:.3f}, P(equal) = {eq:.3f} over {est.n_resamples} resamples; "
                f"{desc('MinorSFT', minor)}; {desc('SFT', sft)}")
    seeds = min(int(_point(est, minor.pid)["n_scored"]), int(_point(est, sft.pid)["n_scored"]))
    row["effects"] = [("log10 vertex lr, MinorSFT − SFT", math.log10(minor.vertex_lr) - math.log10(sft.vertex_lr),
                       _sd(est.vertex_b[(setting, "minor_sft")] - est.vertex_b[(setting, "sft")]))]
    if seeds < MIN_SEEDS:
        return {**row, "outcome": UNDECIDED, "evidence": f"one seed decides nothing; {evidence}"}
    outcome = HOLDS if gt >= LEVEL else (FAILS if lt >= LEVEL else UNDECIDED)
    return {**row, "outcome": outcome, "evidence": evidence}


def _best_claim(setting: str, best: pd.DataFrame, paired: pd.DataFrame) -> dict:
    row = {"setting": setting, "claim": CLAIM_BEST, "scope": "best configurations, report split"}
    tests = [r for r in paired.itertuples() if isinstance(r.delta, float) and math.isfinite(r.delta)]
    present = set(best["method_id"])
    if "minor_sft" not in present or len(present) < 2:
        return {**row, "outcome": UNDECIDED, "evidence": "not measured: needs MinorSFT and a baseline; sweep "
                "has " + (", ".join(sorted(map(method_name, present))) or "none")}
    if not tests:
        return {**row, "outcome": UNDECIDED, "evidence": "not measured: no paired comparison"}
    row["effects"] = [(r.comparison, r.delta, (r.ci_high - r.ci_low) / Z95_WIDTH) for r in tests]
    evidence = "; ".join(
        f"{r.comparison}: Δ {r.delta:+.3f} {_ci(r.ci_low, r.ci_high)}, p={r.p_value:.3g}"
        + (f" ({r.note})" if isinstance(r.note, str) and r.note else "")
        for r in tests
    )
    if any(isinstance(r.note, str) and r.note.startswith("one seed") for r in tests):
        return {**row, "outcome": UNDECIDED, "evidence": f"one seed decides nothing; {evidence}"}
    verdicts = [_by_interval(r.ci_low, r.ci_high) for r in tests]
    outcome = HOLDS if all(v == HOLDS for v in verdicts) else (FAILS if FAILS in verdicts else UNDECIDED)
    return {**row, "outcome": outcome, "evidence": evidence}


def _seed_values(est: Estimates, pid: int, column: str, absolute: bool = False) -> np.ndarray:
    runs = est.runs.set_index("run").loc[_point(est, pid)["runs"], column].to_numpy(dtype=float)
    return np.abs(runs) if absolute else runs


def _deviation_claims(est: Estimates, setting: str, method: str) -> list[dict]:
    name = method_name(method)
    base = {"setting": setting, "claim": CLAIM_DEVIATION}
    mine, sft = est.peaks.get((setting, method)), est.peaks.get((setting, "sft"))
    if mine is None or sft is None:
        missing = " and ".join(method_name(m) for m, p in ((method, mine), ("sft", sft)) if p is None)
        return [{**base, "scope": f"{name} vs SFT", "outcome": UNDECIDED,
                 "evidence": f"not measured: no scored run of {missing}"}]
    same_lr = est.curves[(setting, method)]
    same_lr = same_lr[(same_lr["lr"] == sft.lr) & (same_lr["pid"] >= 0)]
    comparisons = [
        (f"{name} vs SFT, each at its best: train mθ (last quarter of steps)", mine.pid, "train_m_theta_late", False),
        (f"{name} vs SFT, each at its best: final eval |mθ|", mine.pid, "m_theta", True),
    ]
    if len(same_lr):
        comparisons.append((f"{name} vs SFT at SFT's best lr {fmt_lr(sft.lr)}: train mθ (last quarter of steps)",
                            int(same_lr["pid"].iloc[0]), "train_m_theta_late", False))
    rows = []
    for scope, pid, column, absolute in comparisons:
        key = scope.replace(f" {fmt_lr(sft.lr)}:", ":")  # SFT's best lr differs from setting to setting
        a, b = _seed_values(est, pid, column, absolute), _seed_values(est, sft.pid, column, absolute)
        diff, p = welch(a, b)
        pm = _point(est, pid)
        what = f"{name} β={fmt_beta(pm['beta'])} lr={fmt_lr(pm['lr'])}"
        ev = (f"{what}: {np.nanmean(a) if len(a) else math.nan:.4g} ({len(a)} seeds); SFT lr={fmt_lr(sft.lr)}: "
              f"{np.nanmean(b) if len(b) else math.nan:.4g} ({len(b)} seeds); difference {diff:+.4g}, Welch p="
              + ("—" if math.isnan(p) else f"{p:.3g}"))
        if not math.isfinite(diff):
            outcome, ev = UNDECIDED, f"not measured: mθ not recorded; {ev}"
        elif math.isnan(p):
            outcome, ev = UNDECIDED, f"one seed decides nothing; {ev}"
        else:
            outcome = (HOLDS if diff < 0 else FAILS) if p < ALPHA else UNDECIDED
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]  # Welch's standard error, over the seeds Welch used
        se = math.sqrt(fa.var(ddof=1) / fa.size + fb.var(ddof=1) / fb.size) if min(fa.size, fb.size) > 1 else math.nan
        rows.append({**base, "scope": scope, "outcome": outcome, "evidence": ev, "key": key,
                     "effects": [("SFT − " + name, -diff, se)]})
    return rows


def _beta_claim(est: Estimates, setting: str, method: str, beta_table: pd.DataFrame) -> list[dict]:
    peak = est.peaks.get((setting, method))
    if peak is None or math.isnan(peak.beta):
        return []
    t = beta_table[(beta_table["setting"] == setting) & (beta_table["method"] == method_name(method))]
    if t.empty:
        return [{"setting": setting, "claim": CLAIM_BETA, "scope": method_name(method), "outcome": UNDECIDED,
                 "evidence": "not measured: no lr ran several β"}]
    # the best lr of the curve among those that ran several β (refinement midpoints run only the peak's β)
    curve = est.curves[(setting, method)].set_index("lr")["accuracy"]
    r = t.loc[t["lr"].map(curve).idxmax()]
    where = "its best lr" if r["lr"] == peak.lr else "its best lr with several β"
    row = {"setting": setting, "claim": CLAIM_BETA, "scope": f"{method_name(method)} at {where} {fmt_lr(r['lr'])}",
           "key": method_name(method), "equivalence": EQUIVALENCE,
           "effects": [("chosen β − worst β", r["delta"], (r["ci_high"] - r["ci_low"]) / Z95_WIDTH)]}
    ev = (f"report split: chosen β={fmt_beta(r['beta'])} {_acc(r['accuracy'])} − worst β={fmt_beta(r['worst_beta'])} "
          f"{_acc(r['worst_accuracy'])} = {r['delta']:+.3f} {_ci(r['ci_low'], r['ci_high'])}, p={r['p_value']:.3g}; "
          f"{r['n_betas']} β values")
    chosen = est.point(setting, method, r["lr"], float(r["beta"]))
    worst = est.point(setting, method, r["lr"], float(r["worst_beta"]))
    if min(int(chosen["n_scored"]), int(worst["n_scored"])) < MIN_SEEDS:
        return [{**row, "outcome": UNDECIDED, "evidence": f"one seed decides nothing; {ev}"}]
    if r["ci_low"] > 0:
        outcome = HOLDS
    elif -EQUIVALENCE < r["ci_low"] and r["ci_high"] < EQUIVALENCE:
        outcome = FAILS
    else:
        outcome = UNDECIDED
    return [{**row, "outcome": outcome, "evidence": ev}]
