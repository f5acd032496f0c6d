"""The one computation behind the report: every configuration's accuracy with its bootstrap resamples,
every method's learning-rate curve, its peak and its threshold estimate. Tables, claims and plots read
from `Estimates`; nothing is chosen or resampled anywhere else, so they cannot disagree.

The rules, each stated in the report:

- **Scored seeds.** An ok run scores its predictions.jsonl. A *diverged* run is a failure at its
  point, scored as the base model's accuracy (the same on every question): divergence pulls a point
  down instead of hiding from the mean. A *failed* run (crash, OOM) is missing data: not scored,
  flagged, never read as "degrades". A *stopped* or *pruned* run (ended early on a sweeper's request)
  is not scored either: it never reached the full length whose accuracy the curve compares; its
  point counts it (`n_stopped`).
- **Selection and report splits.** Each question's split comes from predictions.jsonl. The β at each
  lr and the peak lr are chosen on the selection split; the accuracy quoted for a chosen configuration
  is on the report split. Without a recorded split both are all questions, and the report says so.
- **Hierarchical bootstrap.** Per setting, `n_resamples` resamples: questions are drawn with
  replacement within each split (one draw shared by every configuration, so comparisons are paired),
  then each configuration's seeds are drawn with replacement. Inside every resample the β choice and
  the argmax over lr are redone.
- **Threshold.** The argmax lr of the best-β selection curve, by the peak rule the sweep's refinement
  also uses (`trainers.data.selection`: ties → the lower β, then the lower lr);
  its bracket is the scored lr just below and just above (above: a stopped lr, if it is nearer or no scored
  lr is there: a sweeper stops only points it found clearly past the threshold); its vertex is the maximum
  of the parabola in log10(lr) through the peak and its two scored neighbours, clipped to them (the edge lr
  when the peak is on an edge of the scored lrs); its interval is the percentile interval of the vertex
  over the resamples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import method_sort_key
from analysis.rundirs import Sweep
from analysis.stats import percentile_interval, question_weights, seed_resample
from trainers.data.selection import best_of, peak
from trainers.runtime.run_dir import (
    DIVERGED,
    FAILED,
    LATE_FRACTION,
    OK,
    PREDICTIONS,
    SCORED_STATUSES,
    STOP_STATUSES,
    STOPPED,
)

N_RESAMPLES = 2000
SEED = 0
MIN_SEEDS = 2
"""Fewest scored seeds at a deciding point for a claim to be decided: one seed decides nothing."""

POINT_COLUMNS = [
    "setting", "method", "lr", "beta", "pid", "n_runs", "n_ok", "n_diverged", "n_failed", "n_stopped", "n_scored",
    "accuracy", "report_accuracy", "accuracy_sd", "seed_sd", "question_se", "ci_low", "ci_high",
    "m_theta", "abs_m_theta", "train_m_theta", "base_accuracy", "runs", "scored_runs", "stop_step",
    "stop_accuracy",
]
"""`accuracy` is the selection split (what choices are made on), `report_accuracy` the report split;
`seed_sd` and `question_se` split the report accuracy's noise into its two sources; ci_* is the
hierarchical 95% interval of the report accuracy. `stop_step`/`stop_accuracy`: where the point's stopped runs
ended (mean step, mean last intermediate selection accuracy); NaN when none was stopped."""


@dataclass
class SettingInfo:
    """What a setting's questions are and where its split came from."""

    n_questions: int
    n_select: int
    n_report: int
    split_source: str  # "predictions.jsonl" or "none: selection and report are the same questions"
    notes: list[str] = field(default_factory=list)


@dataclass
class Peak:
    """A method's threshold as an estimate: argmax, bracket, vertex and its resampled interval."""

    setting: str
    method: str
    lr: float
    beta: float
    pid: int
    select_accuracy: float
    accuracy: float  # report split, at the configuration chosen on the selection split
    runs: list[str]
    lrs: list[float]  # the scored learning rates of the curve
    bracket_low: float  # NaN at the bottom edge
    bracket_high: float  # NaN at the top edge
    bracket: str  # "" when bracketed, else the "threshold not bracketed: …" flag
    vertex_lr: float
    lr_ci_low: float
    lr_ci_high: float
    p_argmax: float  # share of resamples whose argmax is this lr
    tied_lrs: list[float]
    next_lr: float
    next_pid: int | None


@dataclass
class Estimates:
    n_resamples: int
    points: pd.DataFrame
    """One row per (setting, method, lr, β); `pid` indexes select_b / report_b."""
    select_b: np.ndarray
    """[n_points, n_resamples] resampled selection-split accuracy of every configuration."""
    report_b: np.ndarray
    curves: dict[tuple[str, str], pd.DataFrame]
    peaks: dict[tuple[str, str], Peak | None]
    vertex_b: dict[tuple[str, str], np.ndarray]
    """log10 of the threshold vertex in every resample (β choice and argmax redone)."""
    settings: dict[str, SettingInfo]
    runs: pd.DataFrame
    """Every run with its scored selection/report accuracy and late train mθ (NaN when not scored)."""

    def point(self, setting: str, method: str, lr: float, beta: float) -> pd.Series:
        p = self.points
        same_beta = (p["beta"] == beta) | (p["beta"].isna() & (beta is None or math.isnan(beta)))
        return p[(p["setting"] == setting) & (p["method"] == method) & (p["lr"] == lr) & same_beta].iloc[0]

    def p_threshold_greater(self, setting: str, a: str, b: str) -> tuple[float, float]:
        """(P(threshold of a > threshold of b), P(equal)) over the shared resamples; NaNs if either is
        missing."""
        va, vb = self.vertex_b.get((setting, a)), self.vertex_b.get((setting, b))
        if va is None or vb is None:
            return math.nan, math.nan
        return float(np.mean(va > vb + 1e-12)), float(np.mean(np.abs(va - vb) <= 1e-12))


def late_train_m_theta(metrics: pd.DataFrame, fraction: float = LATE_FRACTION) -> pd.Series:
    """Per run: the mean train mθ over the last `fraction` of its logged steps (indexed by run)."""
    if metrics.empty or "m_theta" not in metrics.columns:
        return pd.Series(dtype=float)
    m = metrics.dropna(subset=["m_theta"])
    if m.empty:
        return pd.Series(dtype=float)
    last = m.groupby("run")["step"].transform("max")
    late = m[m["step"] >= last * (1 - fraction)]
    return late.groupby("run")["m_theta"].mean()


def _question_matrix(sweep: Sweep, scored: pd.DataFrame, base: float) -> tuple[np.ndarray, np.ndarray, SettingInfo]:
    """Correctness [scored runs × questions] of one setting and its selection mask."""
    notes: list[str] = []
    ok = scored[scored["status"] == OK]
    preds = {r: sweep.predictions(r) for r in ok["run"]}
    have = {r: p for r, p in preds.items() if p is not None and len(p)}
    ids: pd.Index | None = None
    for p in have.values():
        if ids is None:
            ids = p.index
        elif not p.index.equals(ids):
            ids = ids.intersection(p.index)
    if ids is not None and any(len(p) != len(ids) for p in have.values()):
        notes.append(f"runs were evaluated on different questions; the {len(ids)} every run has are used")
    if len(have) < len(ok):
        notes.append(f"{len(ok) - len(have)} ok run(s) have no predictions.jsonl: scored by their accuracy, "
                     "with no question-level variance")
    ids = ids if ids is not None and len(ids) else pd.Index(["(accuracy)"])
    matrix = np.empty((len(scored), len(ids)), dtype=np.float32)
    for i, r in enumerate(scored.itertuples()):
        if r.status == OK and r.run in have:
            p = have[r.run]
            matrix[i] = (p if p.index.equals(ids) else p.reindex(ids)).to_numpy()
        elif r.status == OK:
            matrix[i] = r.accuracy
        else:  # diverged: a failure at this point, scored as the base model
            matrix[i] = r.base_accuracy if math.isfinite(r.base_accuracy) else base
    split = None
    for r in have:
        s = sweep.split(r)
        if s is not None:
            split = s.reindex(ids)
            break
    if split is not None and split.notna().all() and (split == "select").any() and (split == "report").any():
        select = (split == "select").to_numpy()
        source = PREDICTIONS
    else:
        select = np.ones(len(ids), dtype=bool)
        source = "none: selection and report are the same questions"
    n_sel = int(select.sum())
    n_rep = len(ids) - n_sel if source == PREDICTIONS else len(ids)
    return matrix, select, SettingInfo(len(ids), n_sel, n_rep, source, notes)


def estimate(sweep: Sweep, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Estimates:
    """Compute everything the tables, claims and plots need, once."""
    runs = sweep.runs.copy()
    late = late_train_m_theta(sweep.metrics)
    runs["train_m_theta_late"] = runs["run"].map(late).astype(float).fillna(runs["train_m_theta"])
    runs["select_accuracy"] = math.nan
    runs["report_accuracy"] = math.nan
    rng = np.random.default_rng(seed)
    point_rows: list[dict] = []
    sel_parts: list[np.ndarray] = []
    rep_parts: list[np.ndarray] = []
    settings: dict[str, SettingInfo] = {}
    for setting, sr in runs.groupby("setting", sort=True):
        base = float(sr["base_accuracy"].mean()) if sr["base_accuracy"].notna().any() else 0.0
        scored = sr[sr["status"].isin(SCORED_STATUSES)]
        matrix, select, info = _question_matrix(sweep, scored, base)
        settings[setting] = info
        same = info.split_source != PREDICTIONS
        report = select if same else ~select
        w_sel = question_weights(int(select.sum()), n_resamples, rng)
        w_rep = w_sel if same else question_weights(int(report.sum()), n_resamples, rng)
        sel_b = matrix[:, select] @ w_sel.T  # [R, B]
        rep_b = matrix[:, report] @ w_rep.T
        sel_obs = matrix[:, select].mean(axis=1, dtype=np.float64)
        rep_obs = matrix[:, report].mean(axis=1, dtype=np.float64)
        runs.loc[scored.index, "select_accuracy"] = sel_obs
        runs.loc[scored.index, "report_accuracy"] = rep_obs
        pos = pd.Series(np.arange(len(scored)), index=scored.index)
        for (method, lr, beta), g in sr.groupby(["method", "lr", "beta"], dropna=False, sort=False):
            sg = g[g["status"].isin(SCORED_STATUSES)]
            ok = g[g["status"] == OK]
            rows = pos.loc[sg.index].to_numpy()
            k = len(rows)
            row = {
                "setting": setting, "method": method, "lr": float(lr), "beta": float(beta),
                "pid": len(point_rows), "n_runs": len(g), "n_ok": len(ok),
                "n_diverged": int((g["status"] == DIVERGED).sum()),
                "n_failed": int((g["status"] == FAILED).sum()),
                "n_stopped": int(g["status"].isin(STOP_STATUSES).sum()), "n_scored": k,
                "m_theta": ok["m_theta"].mean() if len(ok) else math.nan,
                "abs_m_theta": ok["m_theta"].abs().mean() if len(ok) else math.nan,
                "train_m_theta": ok["train_m_theta_late"].mean() if len(ok) else math.nan,
                "base_accuracy": g["base_accuracy"].mean(), "runs": list(ok["run"]), "scored_runs": list(sg["run"]),
                **_stopped_at(g),
            }
            if k:
                idx = rng.integers(0, k, size=(n_resamples, k))
                s_b, r_b = seed_resample(sel_b, rows, idx), seed_resample(rep_b, rows, idx)
                lo, hi = percentile_interval(r_b)
                row.update(
                    accuracy=float(sel_obs[rows].mean()), report_accuracy=float(rep_obs[rows].mean()),
                    accuracy_sd=float(sel_obs[rows].std(ddof=1)) if k > 1 else math.nan,
                    seed_sd=float(rep_obs[rows].std(ddof=1)) if k > 1 else math.nan,
                    question_se=float(rep_b[rows].mean(axis=0).std(ddof=1)), ci_low=lo, ci_high=hi,
                )
            else:
                s_b = r_b = np.full(n_resamples, np.nan, dtype=np.float32)
                row.update(accuracy=math.nan, report_accuracy=math.nan, accuracy_sd=math.nan, seed_sd=math.nan,
                           question_se=math.nan, ci_low=math.nan, ci_high=math.nan)
            point_rows.append(row)
            sel_parts.append(s_b)
            rep_parts.append(r_b)
    points = pd.DataFrame(point_rows, columns=POINT_COLUMNS)
    points["_m"] = points["method"].map(method_sort_key)
    points = points.sort_values(["setting", "_m", "lr", "beta"], na_position="first").drop(columns="_m")
    points = points.reset_index(drop=True)
    select_b = np.vstack(sel_parts) if sel_parts else np.zeros((0, n_resamples))
    report_b = np.vstack(rep_parts) if rep_parts else np.zeros((0, n_resamples))
    curves: dict[tuple[str, str], pd.DataFrame] = {}
    peaks: dict[tuple[str, str], Peak | None] = {}
    vertex_b: dict[tuple[str, str], np.ndarray] = {}
    for (setting, method), mp in points.groupby(["setting", "method"], sort=False):
        curve, s_lr = lr_curve(mp, select_b)
        curves[(setting, method)] = curve
        found, v_b = find_peak(setting, method, curve, s_lr, selection_scores(mp))
        peaks[(setting, method)] = found
        if v_b is not None:
            vertex_b[(setting, method)] = v_b
    return Estimates(n_resamples, points, select_b, report_b, curves, peaks, vertex_b, settings, runs)


def _stopped_at(g: pd.DataFrame) -> dict[str, float]:
    """Where a point's stopped runs ended: evidence about its lr, never a score (module docstring)."""
    stopped = g[g["status"].isin(STOP_STATUSES)]
    if stopped.empty:
        return {"stop_step": math.nan, "stop_accuracy": math.nan}
    return {"stop_step": float(stopped["steps"].mean()), "stop_accuracy": float(stopped["last_select_accuracy"].mean())}


def selection_scores(method_points: pd.DataFrame) -> dict[float, dict[float | None, float]]:
    """`curve[lr][β]`: each scored configuration's selection accuracy, as `trainers.data.selection.peak` takes it
    (β None for a β-free method)."""
    scored = method_points[method_points["n_scored"] > 0]
    return {float(lr): {None if pd.isna(b) else float(b): float(a)
                        for b, a in zip(g["beta"], g["accuracy"], strict=True)}
            for lr, g in scored.groupby("lr", sort=True)}


def lr_curve(method_points: pd.DataFrame, select_b: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """A method's selection curve: at each lr the best β on the selection split (ties → lower β).

    Returns the curve (one row per lr; status "ok", "diverged" when every scored seed of the chosen β
    diverged, "stopped" when no seed at that lr was scored and a sweeper stopped some (evidence that the lr
    is past the threshold, `stop_step`/`stop_accuracy` say where), "failed" when no seed at that lr was
    scored otherwise: missing) and the resampled curve [scored lrs × B], with the β choice redone in every
    resample.
    """
    rows, resampled = [], []
    for lr, g in method_points.groupby("lr", sort=True):
        cand = g[g["n_scored"] > 0].sort_values("beta", na_position="first")
        if cand.empty:
            stopped = g[g["n_stopped"] > 0]
            rows.append({"lr": float(lr), "beta": math.nan, "pid": -1, "accuracy": math.nan,
                         "report_accuracy": math.nan, "n_ok": 0, "n_scored": 0,
                         "n_diverged": int(g["n_diverged"].sum()), "n_failed": int(g["n_failed"].sum()),
                         "n_stopped": int(g["n_stopped"].sum()), "n_runs": int(g["n_runs"].sum()),
                         "status": STOPPED if len(stopped) else FAILED, "runs": [], "m_theta": math.nan,
                         "beta_tie": [], "stop_step": float(stopped["stop_step"].mean()) if len(stopped) else math.nan,
                         "stop_accuracy": float(stopped["stop_accuracy"].mean()) if len(stopped) else math.nan})
            continue
        tied = cand.iloc[best_of(cand["accuracy"].tolist())]
        best = tied.iloc[0]
        rows.append({
            "lr": float(lr), "beta": best["beta"], "pid": int(best["pid"]), "accuracy": best["accuracy"],
            "report_accuracy": best["report_accuracy"], "n_ok": int(best["n_ok"]), "n_scored": int(best["n_scored"]),
            "n_diverged": int(best["n_diverged"]), "n_failed": int(best["n_failed"]),
            "n_stopped": int(best["n_stopped"]), "n_runs": int(best["n_runs"]),
            "status": OK if best["n_ok"] > 0 else DIVERGED, "runs": best["runs"], "m_theta": best["m_theta"],
            "beta_tie": [float(b) for b in tied["beta"].iloc[1:]], "stop_step": math.nan, "stop_accuracy": math.nan,
        })
        resampled.append(select_b[cand["pid"].to_numpy()].max(axis=0))
    s_lr = np.vstack(resampled) if resampled else np.zeros((0, select_b.shape[1]))
    return pd.DataFrame(rows), s_lr


def vertex(x: np.ndarray, y: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Vertex (in x) of the parabola through points i−1, i, i+1 of each column of y [L, B]; clipped to
    [x[i−1], x[i+1]]; x[i] at an edge or where the three points are not concave."""
    i = np.asarray(i)
    v = x[i].astype(float)
    inner = (i > 0) & (i < len(x) - 1)
    if inner.any():
        b = np.nonzero(inner)[0]
        j = i[b]
        x0, x1, x2 = x[j - 1], x[j], x[j + 1]
        y0, y1, y2 = (y[j - 1, b].astype(float), y[j, b].astype(float), y[j + 1, b].astype(float))
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        bq = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
        with np.errstate(divide="ignore", invalid="ignore"):
            xv = np.where(a < 0, -bq / (2 * a), x1)
        v[b] = np.clip(xv, x0, x2)
    return v


def find_peak(
    setting: str, method: str, curve: pd.DataFrame, s_lr: np.ndarray, scores: dict[float, dict[float | None, float]]
) -> tuple[Peak | None, np.ndarray | None]:
    """The peak of a selection curve and its threshold estimate; (None, None) when no lr has an ok seed.

    The peak is `trainers.data.selection.peak` of `scores` (`selection_scores`), the rule the sweep's refinement
    calls; in every resample the argmax lr is that rule's `best_of` on the resampled curve."""
    sc = curve[curve["status"].isin(SCORED_STATUSES)].reset_index(drop=True)
    if sc.empty or (sc["n_ok"] == 0).all():  # nothing scored, or every scored seed diverged: no peak
        return None, None
    acc = sc["accuracy"].to_numpy(dtype=float)
    lrs = [float(v) for v in sc["lr"]]
    i = lrs.index(peak(scores)[0])
    x = np.log10(sc["lr"].to_numpy(dtype=float))
    v_obs = float(vertex(x, acc[:, None], np.array([i]))[0])
    arg_b = np.array([best_of(column)[0] for column in s_lr.T.tolist()], dtype=int)
    v_b = vertex(x, s_lr, arg_b)
    lo, hi = percentile_interval(v_b)
    n = len(lrs)
    # a stopped lr above the peak is past the threshold (it was stopped for being clearly worse): it closes the
    # bracket from above when no scored lr does, though it has no full-length accuracy to compare
    stopped_above = sorted(float(v) for v in curve.loc[curve["status"] == STOPPED, "lr"] if v > lrs[i])
    high = min([*lrs[i + 1:i + 2], *stopped_above[:1]], default=math.nan)
    if n == 1 and not stopped_above:
        flag = "threshold not bracketed: a single learning rate; extend the grid up and down"
    elif math.isnan(high):
        flag = "threshold not bracketed: extend the grid up"
    elif i == 0:
        flag = "threshold not bracketed: extend the grid down"
    else:
        flag = ""
    row = sc.iloc[i]
    return Peak(
        setting=setting, method=method, lr=lrs[i], beta=float(row["beta"]), pid=int(row["pid"]),
        select_accuracy=float(row["accuracy"]), accuracy=float(row["report_accuracy"]), runs=list(row["runs"]),
        lrs=lrs, bracket_low=lrs[i - 1] if i > 0 else math.nan,
        bracket_high=high, bracket=flag,
        vertex_lr=float(10**v_obs), lr_ci_low=float(10**lo), lr_ci_high=float(10**hi),
        p_argmax=float(np.mean(arg_b == i)), tied_lrs=[lrs[t] for t in best_of(acc.tolist()) if t != i],
        next_lr=lrs[i + 1] if i < n - 1 else math.nan,
        next_pid=int(sc.iloc[i + 1]["pid"]) if i < n - 1 else None,
    ), v_b
