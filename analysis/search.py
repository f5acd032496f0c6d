"""Hyperparameter searches (Optuna trials) found among a sweep's run directories.

A search trial is an ordinary run directory, so nothing marks it as one: the sweep's β values do.
The rule (`search_keys`): a (setting, method) is a search when at least SEARCH_MIN_BETAS of its β values
were each run exactly once. A grid runs every β at each of its learning rates and seeds, so its β values
repeat (β ∈ {0.1, 0.5} over five lrs is never a search); a sampler draws β from a continuous (log)
range, so no value comes twice. A one-lr, one-seed scan of ≥ 3 β values counts as a search too, which
is what it is. Methods without β (SFT) never are. Only run directories are read — never the sweeper's
optuna.db or optimization_results.yaml — so the tables hold whatever the trials themselves recorded.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import method_name, method_sort_key
from analysis.rundirs import Sweep
from trainers.data.selection import best_of
from trainers.runtime.run_dir import DIVERGED, FAILED, OK, RESULT

SEARCH_MIN_BETAS = 3

TRIAL_COLUMNS = [
    "setting",
    "method",
    "trial",
    "finished_at",
    "lr",
    "beta",
    "status",
    "accuracy",
    "m_theta",
    "running_best",
    "run",
]
BEST_BETA_COLUMNS = [
    "setting",
    "method",
    "beta",
    "lr",
    "accuracy",
    "gain_over_base",
    "m_theta",
    "trial",
    "n_trials",
    "n_ok",
    "n_diverged",
    "n_failed",
    "run",
    "note",
]


def search_keys(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(setting, method) pairs whose runs are a search (module docstring), in report order."""
    keys = []
    for (setting, method), g in runs.dropna(subset=["beta"]).groupby(["setting", "method"]):
        if (g["beta"].value_counts() == 1).sum() >= SEARCH_MIN_BETAS:
            keys.append((setting, method))
    return sorted(keys, key=lambda k: (k[0], method_sort_key(k[1])))


def trials(sweep: Sweep) -> pd.DataFrame:
    """Every run of every search, one row each in finish order per (setting, method).

    `trial` counts from 0 in finish order — Optuna's trial number when trials run one at a time;
    `running_best` is the best ok accuracy so far (NaN until a trial finishes ok), so a diverged trial
    carries the previous best forward. `method_id` and `base_accuracy` are for the plots; the report's
    files leave them out.
    """
    frames = []
    runs = sweep.runs
    for setting, method in search_keys(runs):
        g = runs[(runs["setting"] == setting) & (runs["method"] == method)]
        g = g.sort_values(["finished_at", "run"]).reset_index(drop=True)
        acc = g["accuracy"].where(g["status"] == OK)
        frames.append(
            pd.DataFrame(
                {
                    "setting": setting,
                    "method": method_name(method),
                    "trial": range(len(g)),
                    "finished_at": [
                        t.isoformat(timespec="seconds") + ("" if src == RESULT else " (mtime)")
                        for t, src in zip(g["finished_at"], g["finished_at_from"], strict=True)
                    ],
                    "lr": g["lr"],
                    "beta": g["beta"],
                    "status": g["status"],
                    "accuracy": acc,
                    "m_theta": g["m_theta"],
                    "running_best": acc.cummax().ffill(),
                    "run": g["run"],
                    "method_id": method,
                    "base_accuracy": g["base_accuracy"],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=[*TRIAL_COLUMNS, "method_id", "base_accuracy"])
    return pd.concat(frames, ignore_index=True)


def best_beta(tr: pd.DataFrame) -> pd.DataFrame:
    """Per search: the best trial's β, lr and accuracy (ties → the lower β, then the earlier trial, as
    the grid tables break ties), with trial counts by status. The best of N trials is the maximum of N
    noisy numbers: rerun it with fresh seeds before calling it better than a grid point."""
    rows = []
    for (setting, method_id), g in tr.groupby(["setting", "method_id"], sort=False):
        row: dict = {
            "setting": setting,
            "method": method_name(method_id),
            "n_trials": len(g),
            **{f"n_{s}": int((g["status"] == s).sum()) for s in (OK, DIVERGED, FAILED)},
        }
        ok = g[g["status"] == OK]
        if ok.empty:
            row["note"] = "no trial finished ok"
            rows.append(row)
            continue
        ordered = ok.sort_values(["beta", "trial"])
        top = ordered.iloc[best_of(ordered["accuracy"].tolist())]
        best = top.iloc[0]
        base = g["base_accuracy"].mean()
        row.update(
            beta=best["beta"],
            lr=best["lr"],
            accuracy=best["accuracy"],
            gain_over_base=best["accuracy"] - base if math.isfinite(base) else math.nan,
            m_theta=best["m_theta"],
            trial=int(best["trial"]),
            run=best["run"],
            note=f"tie: {len(top)} trials reach this accuracy; the lowest β is reported" if len(top) > 1 else "",
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=BEST_BETA_COLUMNS)
