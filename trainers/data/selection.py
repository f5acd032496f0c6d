"""Which held-out questions choose a configuration, which score it, and how the choice is made.

Choosing the best lr and β on the questions that then score them is a winner's curse (the more
configurations, the more optimistic the winner). Every eval question is therefore assigned, once and
for all, to "select" (the split the sweep's choices and the Optuna objective use) or "report" (the
split the report quotes). The assignment is a seeded hash of the question id: the same for every job,
every dataset and every launcher, with no change to how data is loaded or evaluated.

The choice itself is one rule (`peak`, with `best_of` for its ties), called by the sweep's refinement
(which learning rates to run next) and by the report's estimates (which configuration to quote), so the
two cannot disagree on where a method peaks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from trainers.runtime.errors import ConfigError
from trainers.runtime.run_dir import DIVERGED, OK

SELECT, REPORT = "select", "report"
SELECT_FRACTION, SELECT_SEED = 0.5, 0
"""The split of a data config that leaves data.select_fraction or data.select_seed out (the shipped ones say so)."""


def split_setting(data: Mapping[str, Any]) -> tuple[float, int]:
    """(select_fraction, select_seed) of a data config: the split of every evaluation, mid-run and final."""
    return data.get("select_fraction", SELECT_FRACTION), data.get("select_seed", SELECT_SEED)


def validate_split_config(data: Mapping[str, Any]) -> None:
    """data.select_fraction must lie strictly between 0 and 1 (both splits non-empty)."""
    f, s = split_setting(data)
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
        raise ConfigError(f"data.select_fraction={f} must be a number in (0, 1), e.g. 0.5 (half the eval questions "
                          "choose lr and β, the other half score them)")
    if isinstance(s, bool) or not isinstance(s, int):
        raise ConfigError(f"data.select_seed={s} must be an integer, e.g. 0")


def assign_split(question_id: object, fraction: float, seed: int) -> str:
    """"select" with probability `fraction`, else "report": a hash of (seed, id), stable across runs."""
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return SELECT if int.from_bytes(digest[:8], "big") / 2**64 < fraction else REPORT


def mark_splits(predictions: list[dict], fraction: float, seed: int) -> list[dict]:
    """predictions.jsonl rows with their "split" added (new dicts; the input is left as it is)."""
    return [{**row, "split": assign_split(row["id"], fraction, seed)} for row in predictions]


def split_accuracy(predictions: list[dict], split: str) -> float | None:
    """Accuracy over the rows of one split (rows carry "split"); None when the split is empty."""
    rows = [r["correct"] for r in predictions if r.get("split") == split]
    return sum(map(bool, rows)) / len(rows) if rows else None


# ---- how a configuration is chosen on the selection split: the one peak rule ------------------------

TIE_ATOL = 1e-9
"""Accuracies are k/n, or means of them: scores this close are the same score (float noise)."""


def run_score(result: Mapping[str, Any] | None) -> float | None:
    """A finished run's selection score: select_accuracy (else accuracy) when ok; the base model's accuracy
    when diverged (a failure at its point, not a gap); None when failed or not finished (missing data)."""
    if not result:
        return None
    if result.get("status") == OK:
        v = result.get("select_accuracy")
        return v if v is not None else result.get("accuracy")
    if result.get("status") == DIVERGED:
        return result.get("base_accuracy")
    return None


def best_of(scores: Sequence[float]) -> list[int]:
    """Indices of the best score and of its ties (within TIE_ATOL), in the order given; the first is chosen.

    Candidates are listed in ascending β (or lr), so a tie goes to the lower β (or lr). NaN scores never win.
    """
    finite = [s for s in scores if not math.isnan(s)]
    if not finite:
        return []
    best = max(finite)
    return [i for i, s in enumerate(scores) if not math.isnan(s) and s >= best - TIE_ATOL]


def peak(curve: Mapping[float, Mapping[float | None, float]]) -> tuple[float, float | None]:
    """The peak rule: at each lr the best β (ties → the lower β), then the lr whose best β scores best
    (ties → the lower lr). `curve[lr][β]` is a configuration's selection score (a mean over its seeds;
    β None for β-free methods, which sorts first). Returns (lr, β) of the peak."""
    chosen: dict[float, tuple[float | None, float]] = {}
    for lr, by_beta in curve.items():
        betas = sorted(by_beta, key=lambda b: -math.inf if b is None else b)
        beta = betas[best_of([by_beta[b] for b in betas])[0]]
        chosen[lr] = (beta, by_beta[beta])
    lrs = sorted(chosen)
    lr = lrs[best_of([chosen[x][1] for x in lrs])[0]]
    return lr, chosen[lr][0]
