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
(sweep/refine.py). An optional `grid.settings` runs the whole grid (refinement included) once per
setting, each a name and the overrides that make it, in a run-directory subtree of its own:

    grid:
      settings:
        world0: [data.world_seed=0]
        world1: [data.world_seed=1]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sweep.overrides import GRID_KEYS
from trainers.runtime.methods import METHODS, beta_error
from trainers.runtime.run_dir import point_label


class GridError(ValueError):
    """A malformed grid; the message is one line naming the entry and the fix."""


@dataclass(frozen=True)
class Setting:
    """One setting of a sweep (a data set, a world): its name (its run directories' top folder) and the
    Hydra overrides that make it."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class GridPoint:
    method: str
    lr: float
    beta: float | None
    seed: int
    setting: Setting | None = None

    def overrides(self) -> list[str]:
        """Hydra overrides that select this point (its setting's, the method's config group, then its values)."""
        beta = "null" if self.beta is None else repr(self.beta)
        own = [f"method={self.method}", f"train.lr={self.lr!r}", f"method.beta={beta}", f"seed={self.seed}"]
        return [*(self.setting.overrides if self.setting else ()), *own]

    def label(self) -> str:
        return point_label(self.method, self.lr, self.beta, self.seed, self.setting.name if self.setting else None)


_SETTING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_settings(grid: Mapping) -> list[Setting | None]:
    """grid.settings as Settings (GridError names the bad entry); [None] when the grid has none."""
    spec = grid.get("settings")
    if spec is None:
        return [None]
    if not isinstance(spec, Mapping) or not spec:
        raise GridError(f"grid.settings must be a non-empty mapping of name -> list of overrides, e.g. "
                        f"{{world1: [data.world_seed=1]}}, got {spec!r}")
    out: list[Setting | None] = []
    for name, overrides in spec.items():
        where = f"grid.settings.{name}"
        if not isinstance(name, str) or not _SETTING_NAME.fullmatch(name) or name.startswith("_"):
            raise GridError(f"{where}: a setting's name is its run directories' folder: use letters, digits, "
                            "'_', '-' and '.', not starting with '_'")
        if isinstance(overrides, str):
            overrides = [overrides]
        if not isinstance(overrides, Sequence) or not overrides or \
                any(not isinstance(o, str) or "=" not in o for o in overrides):
            raise GridError(f"{where} must be a non-empty list of overrides like data.world_seed=1, got {overrides!r}")
        for o in overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            if key in GRID_KEYS:
                raise GridError(f"{where} sets {key}, which every grid point sets itself; set it in grid.methods "
                                "or grid.seeds")
        out.append(Setting(name, tuple(overrides)))
    return out


def _numbers(value: object, where: str, allow_zero: bool = False) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise GridError(f"{where} must be a non-empty list of numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                (v == 0 and not allow_zero):
            raise GridError(f"{where} has {v!r}; every value must be a number {'>=' if allow_zero else '>'} 0")
        out.append(float(v))
    if len(set(out)) != len(out):
        raise GridError(f"{where} lists a value twice: {value!r}")
    return out


def expand_grid(grid: Mapping) -> list[GridPoint]:
    """All grid points, in a stable order (setting, method, lr, β, seed); GridError on a bad entry."""
    if not grid or "methods" not in grid or not grid["methods"]:
        raise GridError("grid.methods is empty; an experiment needs at least one method with its lr list")
    seeds = grid.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise GridError(f"grid.seeds must be a list of integers, got {seeds!r}")
    settings = parse_settings(grid)
    points = []
    for method, spec in grid["methods"].items():
        where = f"grid.methods.{method}"
        if method not in METHODS:
            raise GridError(f"{where}: unknown method; use one of {', '.join(sorted(METHODS))}")
        spec = spec or {}
        unknown = set(spec) - {"lr", "beta"}
        if unknown:
            raise GridError(f"{where} has unknown key(s) {sorted(unknown)}; only lr and beta are read")
        lrs = _numbers(spec.get("lr"), f"{where}.lr")
        if METHODS[method].takes_beta:
            betas: list[float | None] = list(_numbers(spec.get("beta"), f"{where}.beta",
                                                      allow_zero=METHODS[method].beta_may_be_zero))
        elif (reason := beta_error(method, spec.get("beta"))) is not None:  # the job's own rule (validate_config)
            raise GridError(f"{where}.beta: {reason} (it would rerun the same job per β); remove it")
        else:
            betas = [None]
        points += [GridPoint(method, lr, beta, int(seed)) for lr in lrs for beta in betas for seed in seeds]
    return [GridPoint(p.method, p.lr, p.beta, p.seed, setting) for setting in settings for p in points]
