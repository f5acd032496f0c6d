"""The method × learning-rate × β × seed grid of an experiment, expanded into job overrides.

An experiment file (conf/experiment/*.yaml) defines, per method, its learning rates and, for β
methods only, its β values:

    grid:
      seeds: [0]
      methods:
        sft:       {lr: [1e-4, 1e-3]}
        minor_sft: {lr: [1e-4, 1e-3], beta: [0.1, 0.5]}

β-free methods run once per learning rate, never once per β. An optional `grid.refine:
{rounds, factor, seeds}` adds learning rates around each method's peak after the grid has run
(sweep/refine.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainers.model.losses import BETA_METHODS, LOSSES, ZERO_COEFFICIENT_METHODS


class GridError(ValueError):
    """A malformed grid; the message is one line naming the entry and the fix."""


@dataclass(frozen=True)
class GridPoint:
    method: str
    lr: float
    beta: float | None
    seed: int

    def overrides(self) -> list[str]:
        """Hydra overrides that select this point (the method's config group, then its values)."""
        beta = "null" if self.beta is None else repr(self.beta)
        return [f"method={self.method}", f"train.lr={self.lr!r}", f"method.beta={beta}", f"seed={self.seed}"]

    def label(self) -> str:
        beta = "" if self.beta is None else f" β={self.beta:g}"
        return f"{self.method} lr={self.lr:g}{beta} seed={self.seed}"


def _numbers(value: object, where: str, allow_zero: bool = False) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise GridError(f"{where} must be a non-empty list of numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (v == 0 and not allow_zero):
            raise GridError(f"{where} has {v!r}; every value must be a number {'>=' if allow_zero else '>'} 0")
        out.append(float(v))
    if len(set(out)) != len(out):
        raise GridError(f"{where} lists a value twice: {value!r}")
    return out


def expand_grid(grid: Mapping) -> list[GridPoint]:
    """All grid points, in a stable order (method, lr, β, seed); GridError on a bad entry."""
    if not grid or "methods" not in grid or not grid["methods"]:
        raise GridError("grid.methods is empty; an experiment needs at least one method with its lr list")
    seeds = grid.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise GridError(f"grid.seeds must be a list of integers, got {seeds!r}")
    points = []
    for method, spec in grid["methods"].items():
        where = f"grid.methods.{method}"
        if method not in LOSSES:
            raise GridError(f"{where}: unknown method; use one of {', '.join(sorted(LOSSES))}")
        spec = spec or {}
        unknown = set(spec) - {"lr", "beta"}
        if unknown:
            raise GridError(f"{where} has unknown key(s) {sorted(unknown)}; only lr and beta are read")
        lrs = _numbers(spec.get("lr"), f"{where}.lr")
        if method in BETA_METHODS:
            betas: list[float | None] = list(_numbers(spec.get("beta"), f"{where}.beta",
                                                      allow_zero=method in ZERO_COEFFICIENT_METHODS))
        elif spec.get("beta") is not None:
            raise GridError(f"{where}.beta: {method} takes no β (it would rerun the same job per β); remove it")
        else:
            betas = [None]
        points += [GridPoint(method, lr, beta, int(seed)) for lr in lrs for beta in betas for seed in seeds]
    return points
