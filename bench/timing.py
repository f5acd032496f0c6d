"""Interleaved repetitions and paired ratios: robust to a machine shared with other processes.

Each repetition runs every variant once, in a rotated order, so slow phases of the machine hit all
variants alike. A ratio is the median over repetitions of the ratio of the two variants' medians
within that repetition (a paired estimate), not a ratio of two far-apart averages.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def interleave(
    variants: dict[str, Callable[[], list[float]]], reps: int, warmup: int = 1
) -> dict[str, list[list[float]]]:
    """Run each variant `warmup` + `reps` times, rotating the order; returns per-rep lists of timings."""
    names = list(variants)
    out: dict[str, list[list[float]]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            timings = variants[name]()
            if rep >= warmup:
                out[name].append(timings)
    return out


def median_time(per_rep: list[list[float]]) -> float:
    """Median over every measured step of every repetition."""
    return statistics.median(t for rep in per_rep for t in rep)


def paired_ratio(num: list[list[float]], den: list[list[float]]) -> float:
    """Median over repetitions of median(num) / median(den) within the repetition."""
    return statistics.median(statistics.median(a) / statistics.median(b) for a, b in zip(num, den, strict=True))


def spread(num: list[list[float]], den: list[list[float]]) -> tuple[float, float]:
    """Smallest and largest per-repetition ratio: how much the machine's noise moved it."""
    ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(num, den, strict=True)]
    return min(ratios), max(ratios)


def min_ratio(num: list[list[float]], den: list[list[float]]) -> float:
    """Ratio of the fastest steps: a second estimate that noise from other processes can only inflate."""
    return min(t for rep in num for t in rep) / min(t for rep in den for t in rep)


def ratio_summary(num: list[list[float]], den: list[list[float]]) -> dict[str, float]:
    """A row's numbers for two variants' per-repetition step times: the paired ratio, its per-repetition
    range and the ratio of the fastest steps."""
    low, high = spread(num, den)
    return {"ratio": paired_ratio(num, den), "min": low, "max": high, "fastest_step_ratio": min_ratio(num, den)}


def per_rep_summary(per_rep: list[float], fastest: float) -> dict[str, float]:
    """The same numbers from ratios already paired per repetition (a process per variant and repetition)."""
    return {"ratio": statistics.median(per_rep), "min": min(per_rep), "max": max(per_rep),
            "fastest_step_ratio": fastest}
