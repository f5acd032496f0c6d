"""Which held-out questions choose a configuration and which score it.

Choosing the best lr and β on the questions that then score them is a winner's curse (the more
configurations, the more optimistic the winner). Every eval question is therefore assigned, once and
for all, to "select" (the split the sweep's choices and the Optuna objective use) or "report" (the
split the report quotes). The assignment is a seeded hash of the question id: the same for every job,
every dataset and every launcher, with no change to how data is loaded or evaluated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from trainers.runtime.errors import ConfigError

SELECT, REPORT = "select", "report"


def validate_split_config(data: Mapping[str, Any]) -> None:
    """data.select_fraction must lie strictly between 0 and 1 (both splits non-empty)."""
    f = data.get("select_fraction", 0.5)
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
        raise ConfigError(f"data.select_fraction={f} must be a number in (0, 1), e.g. 0.5 (half the eval questions "
                          "choose lr and β, the other half score them)")
    s = data.get("select_seed", 0)
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

