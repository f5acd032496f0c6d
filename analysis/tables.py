"""The report's tables, every one read from the one computation in analysis.estimate.

Every table is a plain DataFrame (numbers stay numbers, for CSV); `analysis.render` formats them. Choices
(β at each lr, the peak lr) are made on the selection split; accuracies quoted for a chosen configuration
are on the report split; intervals and p-values come from the hierarchical bootstrap (seeds, then
questions). Each table says which split its numbers come from.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import method_name, method_sort_key
from analysis.estimate import MIN_SEEDS, Estimates, Peak
from analysis.rundirs import Sweep
from analysis.search import search_keys
from analysis.stats import bootstrap_p, percentile_interval
from trainers.runtime.run_dir import FAILED, PREDICTIONS, STOPPED

COMPARISONS: tuple[tuple[str, str], ...] = (("minor_sft", "sft"), ("minor_sft", "dpo_sft"))
"""(subject, baseline) pairs of the paired table; Δ = subject − baseline."""


def fmt_lr(lr: float) -> str:
    """3e-4 rather than 0.0003: learning rates are read on a log grid."""
    if lr is None or not math.isfinite(lr):
        return "—"
    mant, exp = f"{lr:.2e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def fmt_beta(beta: float) -> str:
    return "—" if beta is None or not math.isfinite(beta) else f"{beta:g}"


def config_label(method: str, beta: float, lr: float | None = None) -> str:
    """'MinorSFT β=0.1 lr=1e-3' — one string naming a configuration."""
    s = method_name(method)
    if beta is not None and math.isfinite(beta):
        s += f" β={beta:g}"
    if lr is not None:
        s += f" lr={fmt_lr(lr)}"
    return s


def _sorted_methods(methods) -> list[str]:
    return sorted(set(methods), key=method_sort_key)


# --------------------------------------------------------------------------- tables (all read Estimates)


def accuracy_grids(est: Estimates) -> dict[str, pd.DataFrame]:
    """Per setting: rows method × β (plus the base model), columns lr; cells hold the selection-split
    accuracy (mean over scored seeds; a diverged seed scores the base model), annotated with how many seeds
    diverged or failed; "failed" alone when no seed at the point was scored (missing data)."""
    pts = est.points
    grids: dict[str, pd.DataFrame] = {}
    for setting, sp in pts.groupby("setting", sort=True):
        lrs = sorted(sp["lr"].unique())
        rows = [
            {
                "method": "base model",
                "beta": math.nan,
                "_m": (-1, ""),
                **{lr: sp["base_accuracy"].mean() for lr in lrs},
            }
        ]
        for (method, beta), g in sp.groupby(["method", "beta"], dropna=False, sort=False):
            row: dict = {"method": method_name(method), "beta": beta, "_m": method_sort_key(method)}
            for _, p in g.iterrows():
                row[p["lr"]] = _grid_cell(p)
            rows.append(row)
        df = pd.DataFrame(rows)
        df = df.sort_values(["_m", "beta"], na_position="first").drop(columns="_m")
        df = df[["method", "beta", *lrs]].reset_index(drop=True)
        grids[setting] = df
    return grids


def _grid_cell(p: pd.Series) -> float | str:
    if p["n_scored"] == 0:
        if p["n_stopped"]:
            return f"stopped early at step {p['stop_step']:.0f} ({p['stop_accuracy']:.3f} then; no final accuracy)"
        return "failed (missing)"
    bits = []
    if p["n_diverged"]:
        bits.append(f"{int(p['n_diverged'])}/{int(p['n_runs'])} diverged")
    if p["n_failed"]:
        bits.append(f"{int(p['n_failed'])}/{int(p['n_runs'])} failed, missing")
    if p["n_stopped"]:
        bits.append(f"{int(p['n_stopped'])}/{int(p['n_runs'])} stopped early, not scored")
    if bits:
        return f"{p['accuracy']:.3f} ({'; '.join(bits)})"
    return float(p["accuracy"])


def _ci_method(est: Estimates, setting: str, n_seeds: int) -> str:
    info = est.settings[setting]
    split = "report split" if info.split_source == PREDICTIONS else "all questions (no split)"
    return f"bootstrap: {n_seeds} seed(s) × {info.n_report} questions, {split}"


THRESHOLD_COLUMNS = [
    "setting",
    "method",
    "threshold_lr",
    "beta",
    "bracket_low",
    "bracket_high",
    "vertex_lr",
    "lr_ci_low",
    "lr_ci_high",
    "p_argmax",
    "select_accuracy",
    "accuracy",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_seeds",
    "next_lr",
    "accuracy_next_lr",
    "drop",
    "gain_over_base",
    "base_accuracy",
    "bracketed",
    "note",
]


def threshold_table(est: Estimates, sweep: Sweep) -> pd.DataFrame:
    """Each method's threshold as an estimate: the argmax lr on the selection split with its bracket
    (scored lr below and above), the log-quadratic vertex and its resampled 95% interval, the share of
    resamples that put the argmax at the same lr, and the report-split accuracy there."""
    rows = []
    searched = search_keys(sweep.runs)
    for (setting, method), curve in est.curves.items():
        base = est.points.loc[est.points["setting"] == setting, "base_accuracy"].mean()
        row: dict = {"setting": setting, "method": method_name(method), "base_accuracy": base}
        peak = est.peaks[(setting, method)]
        notes = _gap_notes(curve)
        if peak is None:
            what = "every scored run diverged" if (curve["n_diverged"] > 0).any() else "no run was scored"
            row.update(note="; ".join([f"no threshold: {what}", *notes]), bracketed="not measured", n_seeds=0)
        else:
            p = est.points.loc[est.points["pid"] == peak.pid].iloc[0]
            notes += _peak_notes(curve, peak, p)
            row.update(_peak_fields(est, setting, peak, p, base), note="; ".join(notes))
        if (setting, method) in searched:  # a search's lr curve pairs each lr with whatever β was sampled there
            row["note"] = "; ".join(x for x in (row.get("note"), SEARCH_NOTE) if x)
        rows.append(row)
    df = pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)
    if not sweep.is_complete and len(df):
        unfinished = f"sweep incomplete ({len(sweep.incomplete)} run(s) unfinished)"
        df["note"] = df["note"].fillna("").map(lambda n: "; ".join(x for x in (n, unfinished) if x))
    return df


def _gap_notes(curve: pd.DataFrame) -> list[str]:
    """The lrs of a curve with no scored run: every run failed (missing data), or stopped early by the sweeper."""
    missing, stopped = curve[curve["status"] == FAILED], curve[curve["status"] == STOPPED]
    notes = []
    if len(missing):
        notes.append(f"lr {', '.join(map(fmt_lr, missing['lr']))}: every run failed (missing data, not "
                     "a drop)")
    if len(stopped):
        where = ", ".join(f"{fmt_lr(r.lr)} at step {r.stop_step:.0f} (selection accuracy {r.stop_accuracy:.3f} "
                          "then)" for r in stopped.itertuples())
        notes.append(f"stopped early by the sweeper as past the threshold: lr {where}; no full-length accuracy, "
                     "not scored")
    return notes


def _peak_notes(curve: pd.DataFrame, peak: Peak, p: pd.Series) -> list[str]:
    """What qualifies a peak: ties in lr or β (the lower is reported), failures among its seeds, a single seed."""
    notes = []
    if peak.tied_lrs:
        notes.append(f"tie: lr {', '.join(map(fmt_lr, peak.tied_lrs))} reach the same accuracy; the lower lr is "
                     "reported")
    beta_tie = curve.loc[curve["lr"] == peak.lr, "beta_tie"].iloc[0]
    if beta_tie:
        notes.append(f"tie: β {', '.join(f'{b:g}' for b in beta_tie)} reach the same accuracy; the lower β is reported")
    if p["n_diverged"] or p["n_failed"]:
        notes.append(f"at the peak {int(p['n_diverged'])} diverged and {int(p['n_failed'])} failed of "
                     f"{int(p['n_runs'])} seeds")
    if p["n_scored"] < MIN_SEEDS:
        notes.append("one seed: the interval holds question noise only")
    return notes


def _peak_fields(est: Estimates, setting: str, peak: Peak, p: pd.Series, base: float) -> dict:
    """A threshold row's numbers: the peak, its bracket and interval, and the drop to the next lr."""
    next_acc, drop = math.nan, math.nan
    if peak.next_pid is not None:
        nxt = est.points.loc[est.points["pid"] == peak.next_pid].iloc[0]
        next_acc = float(nxt["report_accuracy"])
        drop = peak.accuracy - next_acc
    return {
        "threshold_lr": peak.lr, "beta": peak.beta, "bracket_low": peak.bracket_low,
        "bracket_high": peak.bracket_high, "vertex_lr": peak.vertex_lr, "lr_ci_low": peak.lr_ci_low,
        "lr_ci_high": peak.lr_ci_high, "p_argmax": peak.p_argmax, "select_accuracy": peak.select_accuracy,
        "accuracy": peak.accuracy, "ci_low": p["ci_low"], "ci_high": p["ci_high"],
        "ci_method": _ci_method(est, setting, int(p["n_scored"])), "n_seeds": int(p["n_scored"]),
        "next_lr": peak.next_lr, "accuracy_next_lr": next_acc, "drop": drop, "gain_over_base": peak.accuracy - base,
        "bracketed": peak.bracket or "yes",
    }


SEARCH_NOTE = (
    "search: β sampled per trial, not run at every lr; this is the best trial's lr, not a threshold "
    "(see the Search section)"
)

THRESHOLD_COMPARISON_COLUMNS = ["setting", "comparison", "p_greater", "p_equal", "vertex_lr", "baseline_vertex_lr"]


def threshold_comparisons(est: Estimates) -> pd.DataFrame:
    """P(threshold of A > threshold of B) for every pair of methods of a setting, from the shared resamples
    (the vertex redone in each); ties (both at the same grid edge, say) are counted apart."""
    rows = []
    for setting in sorted({s for s, _ in est.curves}):
        methods = sorted((m for s, m in est.curves if s == setting and est.peaks[(s, m)]), key=method_sort_key)
        for i, a in enumerate(methods):
            for b in methods[:i]:
                for x, y in ((a, b), (b, a)) if method_sort_key(a) < method_sort_key(b) else ((a, b),):
                    gt, eq = est.p_threshold_greater(setting, x, y)
                    rows.append({
                        "setting": setting,
                        "comparison": f"{method_name(x)} > {method_name(y)}",
                        "p_greater": gt,
                        "p_equal": eq,
                        "vertex_lr": est.peaks[(setting, x)].vertex_lr,
                        "baseline_vertex_lr": est.peaks[(setting, y)].vertex_lr,
                    })
    return pd.DataFrame(rows, columns=THRESHOLD_COMPARISON_COLUMNS)


BEST_COLUMNS = [
    "setting",
    "method",
    "lr",
    "beta",
    "select_accuracy",
    "accuracy",
    "ci_low",
    "ci_high",
    "ci_method",
    "seed_sd",
    "question_se",
    "n_seeds",
    "gain_over_base",
    "m_theta",
    "abs_m_theta",
    "train_m_theta",
    "steps",
    "wall_s",
    "runs",
]


def best_configs(est: Estimates, sweep: Sweep) -> pd.DataFrame:
    """Best configuration per method and setting (chosen on the selection split, scored on the report
    split), with the two noise sources apart, its final mθ and its cost."""
    rows = []
    by_run = sweep.runs.set_index("run")
    for (setting, method), peak in est.peaks.items():
        if peak is None:
            continue
        p = est.points.loc[est.points["pid"] == peak.pid].iloc[0]
        r = by_run.loc[p["runs"]] if p["runs"] else by_run.iloc[0:0]
        rows.append(
            {
                "setting": setting,
                "method": method_name(method),
                "method_id": method,
                "lr": peak.lr,
                "beta": peak.beta,
                "select_accuracy": peak.select_accuracy,
                "accuracy": peak.accuracy,
                "ci_low": p["ci_low"],
                "ci_high": p["ci_high"],
                "ci_method": _ci_method(est, setting, int(p["n_scored"])),
                "seed_sd": p["seed_sd"],
                "question_se": p["question_se"],
                "n_seeds": int(p["n_scored"]),
                "gain_over_base": peak.accuracy - p["base_accuracy"],
                "m_theta": p["m_theta"],
                "abs_m_theta": p["abs_m_theta"],
                "train_m_theta": p["train_m_theta"],
                "steps": r["steps"].mean(),
                "wall_s": r["wall_s"].mean(),
                "runs": "; ".join(p["scored_runs"]),
                "pid": peak.pid,
            }
        )
    return pd.DataFrame(rows, columns=[*BEST_COLUMNS, "method_id", "pid"])


PAIRED_COLUMNS = [
    "setting",
    "comparison",
    "config",
    "baseline_config",
    "accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "n_seeds",
    "n_questions",
    "note",
]
ALL_SETTINGS = "all settings"


def paired_delta(est: Estimates, pid: int, baseline_pid: int) -> tuple[float, np.ndarray]:
    """Observed report-split Δ = pid − baseline and its resamples (same questions, seeds resampled)."""
    p = est.points.set_index("pid")
    delta = float(p.loc[pid, "report_accuracy"] - p.loc[baseline_pid, "report_accuracy"])
    return delta, est.report_b[pid].astype(float) - est.report_b[baseline_pid].astype(float)


def paired_table(est: Estimates, best: pd.DataFrame) -> pd.DataFrame:
    """MinorSFT's best configuration against each baseline's, paired over the same report questions,
    seeds and questions resampled (hierarchical bootstrap); one more row per comparison averages Δ over
    settings when the sweep has several."""
    rows = []
    pooled: dict[str, list[tuple[float, np.ndarray]]] = {}
    for setting in sorted(est.settings):
        b = best[best["setting"] == setting].set_index("method_id")
        for subject, baseline in COMPARISONS:
            row: dict = {"setting": setting, "comparison": f"{method_name(subject)} vs {method_name(baseline)}"}
            missing = [m for m in (subject, baseline) if m not in b.index]
            if missing:
                row["note"] = "not measured: no scored run of " + " or ".join(map(method_name, missing))
                rows.append(row)
                continue
            s, t = b.loc[subject], b.loc[baseline]
            delta, d_b = paired_delta(est, int(s["pid"]), int(t["pid"]))
            lo, hi = percentile_interval(d_b)
            pooled.setdefault(row["comparison"], []).append((delta, d_b))
            row.update(
                config=config_label(subject, s["beta"], s["lr"]),
                baseline_config=config_label(baseline, t["beta"], t["lr"]),
                accuracy=s["accuracy"],
                baseline_accuracy=t["accuracy"],
                delta=delta,
                ci_low=lo,
                ci_high=hi,
                p_value=bootstrap_p(d_b),
                n_seeds=f"{int(s['n_seeds'])}/{int(t['n_seeds'])}",
                n_questions=est.settings[setting].n_report,
                note="" if min(s["n_seeds"], t["n_seeds"]) >= MIN_SEEDS else "one seed: question noise only",
            )
            rows.append(row)
    if len(est.settings) > 1:
        for comparison, parts in pooled.items():
            d_b = np.mean([d for _, d in parts], axis=0)
            lo, hi = percentile_interval(d_b)
            rows.append({
                "setting": ALL_SETTINGS, "comparison": comparison,
                "delta": float(np.mean([d for d, _ in parts])), "ci_low": lo, "ci_high": hi,
                "p_value": bootstrap_p(d_b),
                "note": f"mean Δ over {len(parts)} of {len(est.settings)} settings, resampled independently",
            })
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


DIVERGENCE_COLUMNS = ["setting", "method", "lr", "n_runs", "n_ok", "n_diverged", "n_failed", "n_stopped",
                      "divergence_rate"]


def divergence_table(est: Estimates) -> pd.DataFrame:
    """Per method and lr (all β): how many seeds diverged, of those that ran to an end (failed runs are
    missing data, and runs a sweeper stopped early did not run to an end: they count in neither)."""
    counts = ["n_runs", "n_ok", "n_diverged", "n_failed", "n_stopped"]
    g = est.points.groupby(["setting", "method", "lr"], sort=False)[counts].sum()
    g = g.reset_index()
    ended = g["n_ok"] + g["n_diverged"]
    g["divergence_rate"] = np.where(ended > 0, g["n_diverged"] / ended.where(ended > 0, 1), np.nan)
    g["method"] = g["method"].map(method_name)
    return g[DIVERGENCE_COLUMNS]


BETA_COLUMNS = ["setting", "method", "lr", "beta", "accuracy", "worst_beta", "worst_accuracy", "delta", "ci_low",
                "ci_high", "p_value", "n_betas"]


def beta_sensitivity(est: Estimates) -> pd.DataFrame:
    """For each β method and lr: the β chosen on the selection split against the worst β there, both on
    the report split, Δ with its hierarchical interval: how much choosing β matters at that lr."""
    rows = []
    for (setting, method), curve in est.curves.items():
        mp = est.points[(est.points["setting"] == setting) & (est.points["method"] == method)]
        if mp["beta"].isna().all():
            continue
        for c in curve.itertuples():
            cand = mp[(mp["lr"] == c.lr) & (mp["n_scored"] > 0)]
            if c.pid < 0 or len(cand) < 2:
                continue
            others = cand[cand["pid"] != c.pid]
            worst = others.loc[others["report_accuracy"].idxmin()]
            delta, d_b = paired_delta(est, int(c.pid), int(worst["pid"]))
            lo, hi = percentile_interval(d_b)
            rows.append({
                "setting": setting, "method": method_name(method), "lr": c.lr, "beta": c.beta,
                "accuracy": c.report_accuracy, "worst_beta": worst["beta"], "worst_accuracy": worst["report_accuracy"],
                "delta": delta, "ci_low": lo, "ci_high": hi, "p_value": bootstrap_p(d_b), "n_betas": len(cand),
            })
    return pd.DataFrame(rows, columns=BETA_COLUMNS)


RUN_TABLE_COLUMNS = [
    "run",
    "setting",
    "method_name",
    "lr",
    "beta",
    "seed",
    "status",
    "accuracy",
    "select_accuracy",
    "report_accuracy",
    "base_accuracy",
    "m_theta",
    "train_m_theta",
    "steps",
    "wall_s",
    "tokens_per_s",
    "error",
]


def run_table(est: Estimates) -> pd.DataFrame:
    """Every finished run, one row each — the table to go back to when a cell looks odd. train mθ is the
    mean over the last quarter of logged steps; a diverged run's select/report accuracy is the base
    model's (how it is scored)."""
    df = est.runs.copy()
    df["train_m_theta"] = df["train_m_theta_late"]
    df["_m"] = df["method"].map(method_sort_key)
    df = df.sort_values(["setting", "_m", "lr", "beta", "seed"], na_position="first")
    return df[RUN_TABLE_COLUMNS].rename(columns={"method_name": "method"}).reset_index(drop=True)


def threshold_by_setting(threshold: pd.DataFrame) -> pd.DataFrame:
    """The threshold table with the settings side by side: one row per method, one column per setting, each
    cell the threshold lr, its vertex with the 95% interval, and a flag when the peak is not bracketed."""
    if threshold.empty or threshold["setting"].nunique() < 2:
        return pd.DataFrame()

    def cell(r: pd.Series) -> str:
        if pd.isna(r.get("threshold_lr")):
            return str(r.get("bracketed") or "not measured")
        edge = "" if r["bracketed"] == "yes" else " (not bracketed)"
        return (f"{fmt_lr(r['threshold_lr'])}, vertex {fmt_lr(r['vertex_lr'])} "
                f"[{fmt_lr(r['lr_ci_low'])}, {fmt_lr(r['lr_ci_high'])}]{edge}")

    cells = threshold.assign(cell=threshold.apply(cell, axis=1))
    wide = cells.pivot(index="method", columns="setting", values="cell").fillna("—")
    order = sorted(wide.index, key=lambda m: list(cells["method"]).index(m))
    return wide.loc[order].reset_index().rename_axis(columns=None)
