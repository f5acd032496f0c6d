"""One W&B summary run per sweep: the report's tables and figures, in the sweep's W&B group.

Its tables include the claims across settings (`tables/claims_across`, analysis.across) and, with several
settings, the threshold per setting side by side; its summary holds every across-settings verdict under
`across settings/<claim>/<scope>`.

Offline unless WANDB_MODE says otherwise (sync later with `wandb sync`); it must never block a sweep on
the network nor fail the report, so every error ends in a one-line warning. No key is read or written
here: W&B finds its own credentials when the user has logged in.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from analysis.plots import Plot


def _wandb_frame(df: pd.DataFrame) -> pd.DataFrame:
    """W&B tables want one type per column: columns mixing numbers and words (e.g. "diverged") become
    text; list cells become text; NaN becomes None."""
    out = df.copy()
    out.columns = [c if isinstance(c, str) else f"lr={c:g}" for c in out.columns]
    for c in out.columns:
        col = out[c]
        kinds = {type(v) for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 or list in kinds:
            out[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in col]
    return out.astype(object).where(out.notna(), None)


def group_of(runs: pd.DataFrame, fallback: str) -> str:
    groups = sorted(g for g in runs["group"].dropna().unique() if g != "unknown")
    return groups[0] if len(groups) == 1 else fallback


def log_summary(
    report_dir: Path,
    group: str,
    tables: dict[str, pd.DataFrame],
    plots: list[Plot],
    summary: dict[str, float | str],
) -> str:
    """Log tables (wandb.Table) and plots (wandb.Image, from the PNGs already written) to a summary run.

    Returns a one-line description of what happened (the run's directory, or why nothing was logged).
    """
    try:
        import wandb
    except ImportError:
        return "W&B summary skipped: wandb is not installed"
    mode = os.environ.get("WANDB_MODE", "offline")
    try:
        settings = wandb.Settings(init_timeout=60, silent=True, console="off")
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "sftsweep"),
            group=group,
            job_type="analysis",
            name=f"{group}-report",
            dir=str(report_dir),
            mode=mode,
            reinit="finish_previous",
            settings=settings,
            config={"analysis": "sweep report"},
        )
        try:
            payload: dict = {}
            for name, df in tables.items():
                payload[f"tables/{name}"] = wandb.Table(dataframe=_wandb_frame(df), allow_mixed_types=True)
            for p in plots:
                payload[f"plots/{p.name}"] = wandb.Image(str(report_dir / f"{p.name}.png"), caption=p.title)
            run.log(payload)
            for k, v in summary.items():
                run.summary[k] = v
            where = getattr(run, "dir", None) or report_dir
        finally:
            run.finish()
        return f"W&B summary run '{group}-report' logged ({mode}) under {where}"
    except Exception as e:  # W&B must never take the report down
        return f"W&B summary skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
