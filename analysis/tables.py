"""The report's tables: accuracy grids, each method's learning-rate threshold, best configurations, paired
comparisons.

Every table is a plain DataFrame (numbers stay numbers, for CSV); `analysis.render` formats them. The
aggregation rule is the same everywhere, so the tables agree with each other and with the plots:
accuracy of a (method, lr, β) point = mean over its seeds that finished "ok"; at each lr a method's
curve takes the best β; the peak of that curve is the method's threshold and its best configuration.
Ties are broken towards the lower β and then the lower lr (the smaller step from the base model reaches
the same accuracy), and every tie is reported in the row's note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import method_name, method_sort_key
from analysis.rundirs import Sweep
from analysis.search import search_keys
from analysis.stats import PairedResult, bootstrap_ci, paired_bootstrap, t_interval, wilson_interval

TIE_ATOL = 1e-9  # accuracies are k/n (or means of them): equal ones compare equal up to float noise
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


# --------------------------------------------------------------------------- points and curves


def points(sweep: Sweep) -> pd.DataFrame:
    """One row per (setting, method, lr, β): seed counts by status and means over the ok seeds."""
    cols = [
        "setting",
        "method",
        "lr",
        "beta",
        "n_runs",
        "n_ok",
        "n_diverged",
        "n_failed",
        "accuracy",
        "accuracy_sd",
        "m_theta",
        "train_m_theta",
        "base_accuracy",
        "runs",
    ]
    runs = sweep.runs
    if runs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (setting, method, lr, beta), g in runs.groupby(["setting", "method", "lr", "beta"], dropna=False):
        ok = g[g["status"] == "ok"]
        rows.append(
            {
                "setting": setting,
                "method": method,
                "lr": float(lr),
                "beta": float(beta),
                "n_runs": len(g),
                "n_ok": len(ok),
                "n_diverged": int((g["status"] == "diverged").sum()),
                "n_failed": int((g["status"] == "failed").sum()),
                "accuracy": ok["accuracy"].mean() if len(ok) else math.nan,
                "accuracy_sd": ok["accuracy"].std(ddof=1) if len(ok) > 1 else math.nan,
                "m_theta": ok["m_theta"].mean() if len(ok) else math.nan,
                "train_m_theta": ok["train_m_theta"].mean() if len(ok) else math.nan,
                "base_accuracy": g["base_accuracy"].mean(),
                "runs": list(ok["run"]),
            }
        )
    df = pd.DataFrame(rows, columns=cols)
    df["_m"] = df["method"].map(method_sort_key)
    df = df.sort_values(["setting", "_m", "lr", "beta"], na_position="first").drop(columns="_m")
    return df.reset_index(drop=True)


def lr_curve(method_points: pd.DataFrame) -> pd.DataFrame:
    """A method's accuracy-vs-lr curve: at each lr the best β by mean accuracy (ties → lower β).

    Columns: lr, beta, accuracy, n_ok, status ("ok", or "diverged"/"failed" when no seed at any β of
    that lr finished ok), runs, beta_tie (other β values with the same accuracy).
    """
    rows = []
    for lr, g in method_points.groupby("lr", sort=True):
        ok = g[g["n_ok"] > 0].sort_values("beta", na_position="first")
        if len(ok):
            best_acc = ok["accuracy"].max()
            tied = ok[np.isclose(ok["accuracy"], best_acc, rtol=0, atol=TIE_ATOL)]
            best = tied.iloc[0]
            rows.append(
                {
                    "lr": float(lr),
                    "beta": best["beta"],
                    "accuracy": best["accuracy"],
                    "n_ok": int(best["n_ok"]),
                    "n_runs": int(best["n_runs"]),
                    "status": "ok",
                    "runs": best["runs"],
                    "m_theta": best["m_theta"],
                    "beta_tie": [float(b) for b in tied["beta"].iloc[1:]],
                }
            )
        else:
            status = "diverged" if g["n_diverged"].sum() > 0 else "failed"
            rows.append(
                {
                    "lr": float(lr),
                    "beta": math.nan,
                    "accuracy": math.nan,
                    "n_ok": 0,
                    "n_runs": int(g["n_runs"].sum()),
                    "status": status,
                    "runs": [],
                    "m_theta": math.nan,
                    "beta_tie": [],
                }
            )
    return pd.DataFrame(rows)


@dataclass
class Peak:
    """Where a method's curve peaks, and what the grid says about whether that peak is a threshold."""

    lr: float
    beta: float
    accuracy: float
    runs: list[str]
    tied_lrs: list[float]
    next_lr: float
    next_accuracy: float | str  # a number, "diverged", "failed", or NaN at the top of the grid
    bracket: str  # "" when bracketed, else the "threshold not bracketed: …" flag
    lrs: list[float]


def find_peak(curve: pd.DataFrame) -> Peak | None:
    """Peak of an lr curve (ties → the lower lr), the next higher lr, and the bracketing flag; None when
    no lr has an ok run."""
    ok = curve[curve["status"] == "ok"]
    if ok.empty:
        return None
    best_acc = ok["accuracy"].max()
    tied = ok[np.isclose(ok["accuracy"], best_acc, rtol=0, atol=TIE_ATOL)].sort_values("lr")
    peak = tied.iloc[0]
    lrs = sorted(curve["lr"])
    higher = curve[curve["lr"] > peak["lr"]].sort_values("lr")
    if higher.empty:
        next_lr, next_acc = math.nan, math.nan
    else:
        nxt = higher.iloc[0]
        next_lr = float(nxt["lr"])
        next_acc = float(nxt["accuracy"]) if nxt["status"] == "ok" else str(nxt["status"])
    at_top, at_bottom = peak["lr"] == lrs[-1], peak["lr"] == lrs[0]
    if at_top and at_bottom:
        bracket = "threshold not bracketed: a single learning rate; extend the grid up and down"
    elif at_top:
        bracket = "threshold not bracketed: extend the grid up"
    elif at_bottom:
        bracket = "threshold not bracketed: extend the grid down"
    else:
        bracket = ""
    return Peak(
        lr=float(peak["lr"]),
        beta=float(peak["beta"]),
        accuracy=float(peak["accuracy"]),
        runs=list(peak["runs"]),
        tied_lrs=[float(x) for x in tied["lr"].iloc[1:]],
        next_lr=next_lr,
        next_accuracy=next_acc,
        bracket=bracket,
        lrs=lrs,
    )


def curves(sweep: Sweep, pts: pd.DataFrame | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """lr curve of every (setting, method)."""
    pts = points(sweep) if pts is None else pts
    return {(s, m): lr_curve(g) for (s, m), g in pts.groupby(["setting", "method"], sort=False)}


# --------------------------------------------------------------------------- intervals


def accuracy_interval(sweep: Sweep, runs: list[str]) -> tuple[float, float, str]:
    """95% interval of a configuration's accuracy: t over seeds with ≥ 2 seeds, else bootstrap over the
    questions of its one run (Wilson from eval_n when predictions.jsonl is missing)."""
    if not runs:
        return math.nan, math.nan, ""
    accs = sweep.runs.set_index("run").loc[runs, "accuracy"].to_numpy(dtype=float)
    if len(runs) >= 2:
        lo, hi = t_interval(accs)
        return max(0.0, lo), min(1.0, hi), f"t over {len(runs)} seeds"
    pred = sweep.predictions(runs[0])
    if pred is not None and len(pred):
        lo, hi = bootstrap_ci(pred.to_numpy())
        return lo, hi, f"bootstrap over {len(pred)} questions"
    n = sweep.runs.set_index("run").loc[runs[0], "eval_n"]
    if math.isfinite(n) and n > 0:
        lo, hi = wilson_interval(float(accs[0]), int(n))
        return lo, hi, f"Wilson, n={int(n)} (no predictions.jsonl)"
    return math.nan, math.nan, "no interval: one seed, no predictions"


# --------------------------------------------------------------------------- tables


def accuracy_grids(sweep: Sweep, pts: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Per setting: rows method × β (plus the base model), columns lr; cells hold the mean accuracy over
    ok seeds, or "diverged"/"failed", or "0.612 (1/2 diverged)" when only some seeds finished ok."""
    pts = points(sweep) if pts is None else pts
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
    bad = int(p["n_diverged"] + p["n_failed"])
    if p["n_ok"] == 0:
        if p["n_diverged"] and p["n_failed"]:
            return "diverged/failed"
        return "diverged" if p["n_diverged"] else "failed"
    if bad:
        what = (
            "diverged"
            if p["n_diverged"] and not p["n_failed"]
            else ("failed" if p["n_failed"] and not p["n_diverged"] else "diverged/failed")
        )
        return f"{p['accuracy']:.3f} ({bad}/{int(p['n_runs'])} {what})"
    return float(p["accuracy"])


THRESHOLD_COLUMNS = [
    "setting",
    "method",
    "threshold_lr",
    "beta",
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


def threshold_table(sweep: Sweep, pts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method's learning-rate threshold: the lr at the peak of its best-β curve, with the accuracy
    there (95% interval), the accuracy at the next higher lr and the drop, the gain over the base model,
    and a flag when the peak sits on an edge of the grid."""
    pts = points(sweep) if pts is None else pts
    rows = []
    crv = curves(sweep, pts)
    searched = search_keys(sweep.runs)
    for (setting, method), curve in crv.items():  # one row per curve, in crv's order
        base = pts.loc[pts["setting"] == setting, "base_accuracy"].mean()
        row: dict = {"setting": setting, "method": method_name(method), "base_accuracy": base}
        peak = find_peak(curve)
        if peak is None:
            statuses = set(curve["status"])
            what = (
                "diverged"
                if statuses == {"diverged"}
                else ("failed" if statuses == {"failed"} else "diverged or failed")
            )
            row.update(
                note=f"no threshold: all runs {what} (lr {', '.join(map(fmt_lr, curve['lr']))})",
                bracketed="not measured",
                n_seeds=0,
            )
            rows.append(row)
            continue
        lo, hi, how = accuracy_interval(sweep, peak.runs)
        notes = []
        if peak.tied_lrs:
            notes.append(
                f"tie: lr {', '.join(map(fmt_lr, peak.tied_lrs))} reach the same accuracy; "
                "the lower lr is reported"
            )
        beta_tie = curve.loc[curve["lr"] == peak.lr, "beta_tie"].iloc[0]
        if beta_tie:
            notes.append(
                f"tie: β {', '.join(f'{b:g}' for b in beta_tie)} reach the same accuracy; "
                "the lower β is reported"
            )
        at_peak = pts[
            (pts["setting"] == setting)
            & (pts["method"] == method)
            & (pts["lr"] == peak.lr)
            & ((pts["beta"] == peak.beta) | (pts["beta"].isna() & math.isnan(peak.beta)))
        ]
        n_bad = int(at_peak["n_diverged"].sum() + at_peak["n_failed"].sum())
        if n_bad:
            notes.append(f"{n_bad} of {int(at_peak['n_runs'].sum())} seeds at the peak did not finish ok")
        if isinstance(peak.next_accuracy, str):
            drop: float | str = peak.next_accuracy
        elif math.isfinite(peak.next_accuracy):
            drop = peak.accuracy - peak.next_accuracy
        else:
            drop = math.nan
        row.update(
            threshold_lr=peak.lr,
            beta=peak.beta,
            accuracy=peak.accuracy,
            ci_low=lo,
            ci_high=hi,
            ci_method=how,
            n_seeds=len(peak.runs),
            next_lr=peak.next_lr,
            accuracy_next_lr=peak.next_accuracy,
            drop=drop,
            gain_over_base=peak.accuracy - base,
            bracketed=peak.bracket or "yes",
            note="; ".join(notes),
        )
        rows.append(row)
    for row, key in zip(rows, crv, strict=True):
        if key in searched:  # a search's lr curve pairs each lr with whatever β was sampled there
            row["note"] = "; ".join(x for x in (row.get("note"), SEARCH_NOTE) if x)
    df = pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)
    if not sweep.is_complete and len(df):
        df["note"] = (
            df["note"]
            .fillna("")
            .map(
                lambda n: "; ".join(
                    x for x in (n, f"sweep incomplete ({len(sweep.incomplete)} run(s) unfinished)") if x
                )
            )
        )
    return df


SEARCH_NOTE = (
    "search: β sampled per trial, not run at every lr; this is the best trial's lr, not a threshold "
    "(see the Search section)"
)

BEST_COLUMNS = [
    "setting",
    "method",
    "lr",
    "beta",
    "accuracy",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_seeds",
    "gain_over_base",
    "m_theta",
    "train_m_theta",
    "steps",
    "wall_s",
    "runs",
]


def best_configs(sweep: Sweep, pts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best configuration per method and setting (the peak of its curve), with its final mθ and cost."""
    pts = points(sweep) if pts is None else pts
    rows = []
    by_run = sweep.runs.set_index("run")
    for (setting, method), curve in curves(sweep, pts).items():
        peak = find_peak(curve)
        if peak is None:
            continue
        lo, hi, how = accuracy_interval(sweep, peak.runs)
        r = by_run.loc[peak.runs]
        base = pts.loc[pts["setting"] == setting, "base_accuracy"].mean()
        rows.append(
            {
                "setting": setting,
                "method": method_name(method),
                "method_id": method,
                "lr": peak.lr,
                "beta": peak.beta,
                "accuracy": peak.accuracy,
                "ci_low": lo,
                "ci_high": hi,
                "ci_method": how,
                "n_seeds": len(peak.runs),
                "gain_over_base": peak.accuracy - base,
                "m_theta": r["m_theta"].mean(),
                "train_m_theta": r["train_m_theta"].mean(),
                "steps": r["steps"].mean(),
                "wall_s": r["wall_s"].mean(),
                "runs": "; ".join(peak.runs),
            }
        )
    return pd.DataFrame(rows, columns=[*BEST_COLUMNS, "method_id"])


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
    "n_questions",
    "note",
]


def question_correctness(sweep: Sweep, runs: list[str]) -> pd.Series | None:
    """Per-question correctness of a configuration: the mean over its seeds' predictions.jsonl."""
    preds = [p for p in (sweep.predictions(r) for r in runs) if p is not None and len(p)]
    if not preds:
        return None
    return pd.concat(preds, axis=1).mean(axis=1)


def paired_table(sweep: Sweep, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """MinorSFT's best configuration against each baseline's, paired over the same questions.

    Δ = subject − baseline accuracy on the questions both have (mean over seeds per question), with a
    paired-bootstrap 95% interval and two-sided p-value (analysis.stats.paired_bootstrap).
    """
    best = best_configs(sweep) if best is None else best
    rows = []
    for setting in sorted(sweep.runs["setting"].unique()):
        b = best[best["setting"] == setting].set_index("method_id")
        for subject, baseline in COMPARISONS:
            row: dict = {
                "setting": setting,
                "comparison": f"{method_name(subject)} vs {method_name(baseline)}",
            }
            missing = [m for m in (subject, baseline) if m not in b.index]
            if missing:
                row["note"] = "not measured: no ok run of " + " or ".join(map(method_name, missing))
                rows.append(row)
                continue
            s, t = b.loc[subject], b.loc[baseline]
            row["config"] = config_label(subject, s["beta"], s["lr"])
            row["baseline_config"] = config_label(baseline, t["beta"], t["lr"])
            qs = question_correctness(sweep, s["runs"].split("; "))
            qt = question_correctness(sweep, t["runs"].split("; "))
            if qs is None or qt is None:
                row["note"] = "not measured: predictions.jsonl missing for a best configuration"
                rows.append(row)
                continue
            shared = qs.index.intersection(qt.index)
            if len(shared) == 0:
                row["note"] = "not measured: the two configurations share no question ids"
                rows.append(row)
                continue
            res: PairedResult = paired_bootstrap(qt.loc[shared].to_numpy(), qs.loc[shared].to_numpy())
            note = []
            if len(shared) < max(len(qs), len(qt)):
                note.append(f"{len(shared)} shared of {len(qs)}/{len(qt)} questions")
            row.update(
                accuracy=float(qs.loc[shared].mean()),
                baseline_accuracy=float(qt.loc[shared].mean()),
                delta=res.delta,
                ci_low=res.ci_low,
                ci_high=res.ci_high,
                p_value=res.p_value,
                n_questions=res.n,
                note="; ".join(note),
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


RUN_TABLE_COLUMNS = [
    "run",
    "setting",
    "method_name",
    "lr",
    "beta",
    "seed",
    "status",
    "accuracy",
    "base_accuracy",
    "m_theta",
    "train_m_theta",
    "steps",
    "wall_s",
    "tokens_per_s",
    "error",
]


def run_table(sweep: Sweep) -> pd.DataFrame:
    """Every finished run, one row each — the table to go back to when a cell looks odd."""
    df = sweep.runs.copy()
    df["_m"] = df["method"].map(method_sort_key)
    df = df.sort_values(["setting", "_m", "lr", "beta", "seed"], na_position="first")
    return df[RUN_TABLE_COLUMNS].rename(columns={"method_name": "method"}).reset_index(drop=True)
