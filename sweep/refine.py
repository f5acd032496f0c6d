"""Bracket, then refine: run more learning rates only where a method's threshold is.

A half-decade grid answers "which lr" to the nearest grid cell, so two methods that peak in the same cell
look the same. A dense grid everywhere costs GPU-hours on learning rates far from any peak. After the
coarse grid, each round reads the finished results, finds each method's peak on the selection split (the
peak rule of `trainers.data.selection`, over means across seeds; a diverged seed scores the base model, a
failed one is missing) and adds the geometric midpoints between the peak and the scored learning rate on
each side, for the peak's β, until each method's bracket (the scored lr above over the one below) is at
most `factor` or the rounds are used. A peak on the grid's edge is not refined (no midpoint can bracket it; the
report says to extend the grid):

    grid:
      refine: {rounds: 2, factor: 2.5, seeds: [0, 1, 2]}

With grid.settings, every setting is refined on its own (its own peaks, its own midpoints).
Midpoints run on the grid's seeds, so every round picks its peak among points with the same seeds.
Once the rounds are done, `seeds` (default: the grid's) run where each threshold is decided: the peak
and the scored lr on each side of it, every β that ran there. The bracket, the choice of β at those
learning rates and whether β matters then rest on seeds, and no one-seed point competes with a mean
over three. If the seeds move the peak, its new neighbours get them too. Everything is a function of
the results on disk, so a rerun replays it, skipping finished points: refinement resumes like the
grid does, on any launcher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.grid import GridError, GridPoint, Setting
from trainers.data.selection import peak, run_score
from trainers.runtime.run_dir import read_result

SIG_DIGITS = 3  # midpoints are rounded (5.48e-4, not 5.477225575e-4): readable run directories


@dataclass(frozen=True)
class RefineSpec:
    rounds: int
    factor: float
    seeds: tuple[int, ...] | None  # None: the grid's own seeds


def refine_spec(grid: Mapping | None) -> RefineSpec | None:
    """grid.refine parsed and checked (GridError names the field), or None when the grid has none."""
    spec = (grid or {}).get("refine")
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise GridError(f"grid.refine must be a mapping like {{rounds: 2, factor: 2.5}}, got {spec!r}")
    unknown = set(spec) - {"rounds", "factor", "seeds"}
    if unknown:
        raise GridError(f"grid.refine has unknown key(s) {sorted(unknown)}; use rounds, factor, seeds")
    rounds, factor = spec.get("rounds", 2), spec.get("factor", 2.5)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise GridError(f"grid.refine.rounds={rounds!r} must be an integer >= 0 (refinement rounds after the grid)")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise GridError(f"grid.refine.factor={factor!r} must be a number > 1 (the target bracket ratio lr_hi/lr_lo)")
    seeds = spec.get("seeds")
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise GridError(f"grid.refine.seeds must be a list of integers, got {spec.get('seeds')!r}")
        seeds = tuple(int(s) for s in seeds)
    return RefineSpec(int(rounds), float(factor), seeds)


@dataclass
class MethodPeak:
    method: str
    lr: float
    beta: float | None
    lrs: list[float]  # scored learning rates, ascending
    setting: Setting | None = None

    @property
    def name(self) -> str:
        """The method, under its setting's name when the grid has settings (the refinement log's keys)."""
        return f"{self.setting.name}/{self.method}" if self.setting else self.method

    @property
    def below(self) -> float | None:
        i = self.lrs.index(self.lr)
        return self.lrs[i - 1] if i > 0 else None

    @property
    def above(self) -> float | None:
        i = self.lrs.index(self.lr)
        return self.lrs[i + 1] if i < len(self.lrs) - 1 else None

    def bracket_ratio(self) -> float:
        lo, hi = self.below, self.above
        return math.inf if lo is None or hi is None else hi / lo


def peaks(scores: Mapping[GridPoint, float | None]) -> dict[str, MethodPeak]:
    """Each (setting's) method's selection peak by the one peak rule (`trainers.data.selection.peak`), over
    the mean score of each (lr, β) across its scored seeds; keyed by `MethodPeak.name`."""
    curves: dict[tuple[Setting | None, str], dict[float, dict[float | None, list[float]]]] = {}
    for p, s in scores.items():
        if s is not None:
            curves.setdefault((p.setting, p.method), {}).setdefault(p.lr, {}).setdefault(p.beta, []).append(s)
    out: dict[str, MethodPeak] = {}
    for (setting, method), by_lr in curves.items():
        curve = {lr: {beta: sum(v) / len(v) for beta, v in betas.items()} for lr, betas in by_lr.items()}
        lr, beta = peak(curve)
        m = MethodPeak(method, lr, beta, sorted(curve), setting)
        out[m.name] = m
    return dict(sorted(out.items()))


def _mid(a: float, b: float) -> float:
    return float(f"{math.sqrt(a * b):.{SIG_DIGITS}g}")


def _seeded(m: MethodPeak, todo: Sequence[tuple[float, float | None]], seeds: Sequence[int],
            known: set[GridPoint]) -> list[GridPoint]:
    """The points (m's setting and method, each (lr, β), each seed) not yet planned."""
    return [p for lr, beta in todo for s in seeds if (p := GridPoint(m.method, lr, beta, s, m.setting)) not in known]


def plan_round(scores: Mapping[GridPoint, float | None], spec: RefineSpec, seeds: Sequence[int]) -> list[GridPoint]:
    """The next round's new points: for each method whose bracket is wider than the target, the midpoints
    on both sides of its peak, for the peak's β, on the grid's `seeds`."""
    known, new = set(scores), []
    for m in peaks(scores).values():
        if m.below is None or m.above is None or m.bracket_ratio() <= spec.factor:
            continue  # settled, or a peak on the grid's edge: refining cannot bracket it (extend the grid)
        mids = sorted({_mid(m.lr, x) for x in (m.below, m.above) if max(x, m.lr) / min(x, m.lr) > 1.0001})
        new += _seeded(m, [(lr, m.beta) for lr in mids], seeds, known | set(new))
    return new


def plan_bracket_seeds(scores: Mapping[GridPoint, float | None], spec: RefineSpec,
                       seeds: Sequence[int]) -> list[GridPoint]:
    """The refinement seeds where each method's threshold is decided and they have not run: its peak and
    the scored learning rate on each side, with every β that ran at those learning rates."""
    seeds, known, new = list(spec.seeds or seeds), set(scores), []
    for m in peaks(scores).values():
        lrs = {x for x in (m.below, m.lr, m.above) if x is not None}
        todo = {(p.lr, p.beta) for p in scores if p.method == m.method and p.setting == m.setting and p.lr in lrs}
        new += _seeded(m, sorted(todo, key=lambda t: (t[0], t[1] or 0.0)), seeds, known | set(new))
    return new


def read_scores(points: Sequence[GridPoint], run_dirs: Sequence[Path]) -> dict[GridPoint, float | None]:
    return {p: run_score(read_result(d)) for p, d in zip(points, run_dirs, strict=True)}


def refine(
    spec: RefineSpec,
    points: list[GridPoint],
    run_dirs: list[Path],
    seeds: Sequence[int],
    launch: Callable[[list[GridPoint], str], list[Path]],
    scores_of: Callable[[list[GridPoint], list[Path]], Mapping[GridPoint, float | None]] = read_scores,
) -> list[dict[str, Any]]:
    """Run the refinement rounds, then the seeds at each bracket, through `launch(new_points, what)` (which
    runs new points, skipping finished ones, and returns their run directories); extends points and
    run_dirs in place; returns one record per round and one per seeding pass."""
    log: list[dict[str, Any]] = []

    def run(new: list[GridPoint], what: str) -> None:
        run_dirs.extend(launch(new, what))
        points.extend(new)

    for r in range(1, spec.rounds + 1):
        scores = scores_of(points, run_dirs)
        before = {m.name: [m.below, m.lr, m.above] for m in peaks(scores).values()}
        new = plan_round(scores, spec, seeds)
        if not new:
            log.append({"round": r, "brackets": before, "new_points": 0,
                        "ended": "no new point: every bracket within factor, on an edge, or its midpoints ran"})
            break
        run(new, "midpoints around the peaks")
        log.append({"round": r, "brackets": before, "new_points": len(new), "lrs": sorted({p.lr for p in new})})
    # terminates: every pass runs at least one point of the finite set (scored lrs × seeds)
    scores = scores_of(points, run_dirs)
    while spec.rounds and (new := plan_bracket_seeds(scores, spec, seeds)):
        run(new, "seeds where the thresholds are decided")
        log.append({"bracket_seeds": len(new), "points": [p.label() for p in new]})
        scores = scores_of(points, run_dirs)
    final = peaks(scores)
    log.append({"final_brackets": {m.name: [m.below, m.lr, m.above] for m in final.values()},
                "settled": {m.name: m.bracket_ratio() <= spec.factor for m in final.values()}})
    return log
