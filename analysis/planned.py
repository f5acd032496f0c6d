"""The planned grid of a sweep, read from the files the sweeper leaves next to the runs.

Run directories only say what ran. A point that never started leaves nothing behind, so the report reads the
sweeper's own list of points: `sweep_summary.json` once the sweep has finished, else `sweep_plan.json`, which the
sweeper writes before it launches anything and extends with each refinement round and each batch of Optuna
trials (so a killed sweep's plan has its β rules, refinement points and trials, as the sweeper expanded them). A
planned point is finished when a run with its coordinates ended "ok" or "diverged"; the others are listed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from trainers.runtime.run_dir import (
    FAILED,
    SCORED_STATUSES,
    STOP_STATUSES,
    SWEEP_PLAN,
    SWEEP_SUMMARY,
    read_planned_points,
)

PLAN_COLUMNS = ["method", "lr", "beta", "seed", "source", "grid_setting"]
UNFINISHED_COLUMNS = ["method", "lr", "beta", "seed", "status", "source", "error"]
"""`grid_setting`: the grid.settings entry a point belongs to (its run directories' top folder), else None."""


def read_plan(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """(planned points, problems): the points of sweep_summary.json, else of sweep_plan.json, else none."""
    problems: list[str] = []
    for name in (SWEEP_SUMMARY, SWEEP_PLAN):
        path = root / name
        if not path.is_file():
            continue
        try:
            rows = [{"method": p.method, "lr": p.lr, "beta": math.nan if p.beta is None else p.beta, "seed": p.seed,
                     "source": name, "grid_setting": p.setting} for p in read_planned_points(path)]
            return pd.DataFrame(rows, columns=PLAN_COLUMNS), problems
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
    if problems:
        problems[-1] += "; the planned grid is not checked"
    return pd.DataFrame(columns=PLAN_COLUMNS), problems


def unfinished(plan: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Planned points without an ok or diverged run: "failed" (crashed: missing data), "stopped"/"pruned"
    (ended early on a sweeper's request: no final accuracy) or "never finished"."""
    rows = []
    for p in plan.itertuples():
        where = (pd.Series([r.startswith(f"{p.grid_setting}/") for r in runs["run"]], index=runs.index, dtype=bool)
                 if isinstance(p.grid_setting, str) and len(runs) else True)
        at = runs[
            where
            & (runs["method"] == p.method)
            & pd.Series([math.isclose(v, p.lr, rel_tol=1e-9) for v in runs["lr"]], index=runs.index, dtype=bool)
            & ((runs["beta"] == p.beta) | (runs["beta"].isna() & math.isnan(p.beta)))
            & (runs["seed"] == p.seed)
        ] if len(runs) else runs
        if (at["status"].isin(SCORED_STATUSES)).any():
            continue
        failed, stopped = at[at["status"] == FAILED], at[at["status"].isin(STOP_STATUSES)]
        status = FAILED if len(failed) else stopped["status"].iloc[0] if len(stopped) else "never finished"
        rows.append({"method": p.method if not isinstance(p.grid_setting, str) else f"{p.grid_setting}: {p.method}",
                     "lr": p.lr, "beta": p.beta, "seed": p.seed, "status": status,
                     "source": p.source, "error": failed["error"].iloc[0] if len(failed) else None})
    return pd.DataFrame(rows, columns=UNFINISHED_COLUMNS)
