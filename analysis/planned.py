"""The planned grid of a sweep, read from the files the sweeper leaves next to the runs.

Run directories only say what ran. A point that never started leaves nothing behind, so the report
reads the plan too: `sweep_summary.json` (every point the grid sweeper planned, refinement rounds
included) or, when the sweep was killed before writing it, the `grid:` of `multirun.yaml`. A planned
point is finished when a run with its coordinates ended "ok" or "diverged"; the others are listed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from trainers.runtime.run_dir import FAILED, SCORED_STATUSES, STOP_STATUSES, SWEEP_SUMMARY

MULTIRUN = "multirun.yaml"
PLAN_COLUMNS = ["method", "lr", "beta", "seed", "source", "grid_setting"]
UNFINISHED_COLUMNS = ["method", "lr", "beta", "seed", "status", "source", "error"]
"""`grid_setting`: the grid.settings entry a point belongs to (its run directories' top folder), else None."""


def _float(v: object) -> float:
    return math.nan if v is None else float(v)  # type: ignore[arg-type]


def read_plan(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """(planned points, problems): from sweep_summary.json, else multirun.yaml's grid, else empty."""
    problems: list[str] = []
    summary = root / SWEEP_SUMMARY
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            rows = [
                {"method": str(p["method"]), "lr": float(p["lr"]), "beta": _float(p.get("beta")),
                 "seed": int(p.get("seed", 0)), "source": SWEEP_SUMMARY, "grid_setting": p.get("setting")}
                for p in data.get("points", [])
            ]
            return pd.DataFrame(rows, columns=PLAN_COLUMNS), problems
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(f"{summary}: unreadable ({e}); the planned grid is not checked")
    multirun = root / MULTIRUN
    if multirun.is_file():
        try:
            grid = (yaml.safe_load(multirun.read_text(encoding="utf-8")) or {}).get("grid") or {}
            seeds = grid.get("seeds", [0])
            seeds = [seeds] if isinstance(seeds, int) else list(seeds)
            rows = []
            for method, spec in (grid.get("methods") or {}).items():
                spec = spec or {}
                lrs = spec.get("lr", [])
                lrs = lrs if isinstance(lrs, list) else [lrs]
                betas = spec.get("beta")
                betas = [None] if betas is None else (betas if isinstance(betas, list) else [betas])
                rows += [{"method": method, "lr": float(lr), "beta": _float(b), "seed": int(s), "source": MULTIRUN,
                          "grid_setting": setting}
                         for setting in (list(grid.get("settings") or {}) or [None])
                         for lr in lrs for b in betas for s in seeds]
            return pd.DataFrame(rows, columns=PLAN_COLUMNS), problems
        except (yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
            problems.append(f"{multirun}: unreadable grid ({e}); the planned grid is not checked")
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
