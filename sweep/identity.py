"""What a sweep directory holds: its experiment and the settings behind its results, recorded on first use.

A run directory's path names only a point's grid coordinates (method, lr, β, seed), so another experiment,
or the same one with another `train.max_steps`, maps its points onto the same run directories and would
replace their results, and the report would mix both. The sweeper (grid or Optuna, under the directory's
lock: sweep.ownership) records `SWEEP_DIR/sweep_identity.json` the first time it runs there, and refuses
in one line, before anything runs or is written, a sweep whose experiment or settings differ:

- the experiment (`experiment_name`) and the sweeper (grid or optuna);
- the settings: every key a job's config hash covers (`trainers.runtime.run_dir.hashed_settings`), less the
  coordinates the sweep itself varies (a grid's method, lr, β and seed; the keys an Optuna study searches),
  and an Optuna study's search space and direction;
- a grid setting (`grid.settings.<name>`) whose overrides changed.

Not the grid's lists: more seeds, learning rates or methods, a new grid setting, refinement, and how the
jobs run (launcher, threads, W&B, n_trials) extend the same sweep. `hydra.sweeper.extend=true` runs a
refused sweep there anyway; the record then becomes this sweep's, the replaced one kept under `earlier`.
A directory from before this record (results, no identity file) is judged by its results' experiment.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sweep.ownership import SweepDirRefused
from trainers.runtime.run_dir import RESULT, atomic_write_json, hashed_settings

IDENTITY = "sweep_identity.json"
EXTEND = "hydra.sweeper.extend=true"
SHOWN = 3  # differing settings named in the refusal


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; lists and scalars are leaves."""
    if not isinstance(tree, Mapping) or (prefix and not tree):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _json(value: Any) -> Any:
    """As it reads back from the file (tuples become lists, odd objects strings), so a record compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def sweep_identity(cfg: DictConfig, sweeper: str, coordinates: Iterable[str], extra: Mapping[str, Any] | None = None,
                   grid_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The identity of a sweep from its composed (master) config; `coordinates` are the keys (or groups, like
    `method`) the sweep sets per job, left out."""
    if "hydra" in cfg:  # a sweeper's config: its paths read ${hydra:runtime.cwd}
        HydraConfig.instance().set_config(cfg)
    varied = tuple(coordinates)
    settings = {k: v for k, v in flatten(hashed_settings(cfg)).items()
                if not any(k == c or k.startswith(c + ".") for c in varied)}
    settings.update(extra or {})
    return _json({"sweeper": sweeper, "experiment": str(cfg.experiment_name), "settings": settings,
                  "grid_settings": OmegaConf.to_container(grid_settings, resolve=True)
                  if isinstance(grid_settings, DictConfig) else dict(grid_settings or {})})


def recorded(sweep_dir: Path) -> dict[str, Any] | None:
    """The directory's identity: its record, or for a directory from before records, its results' experiment."""
    try:
        record = json.loads((Path(sweep_dir) / IDENTITY).read_text(encoding="utf-8"))
        if isinstance(record, dict):
            return record
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    for path in Path(sweep_dir).rglob(RESULT) if Path(sweep_dir).is_dir() else ():
        try:
            group = json.loads(path.read_text(encoding="utf-8")).get("group")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if group:
            return {"experiment": str(group), "legacy": True}
    return None


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


_UNSET = object()


def difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between a recorded identity and this sweep's, in words; None if this sweep may run there."""
    if old.get("experiment") != new["experiment"] or old.get("sweeper", new["sweeper"]) != new["sweeper"]:
        kind = f"{old['sweeper']} sweep" if old.get("sweeper") else "sweep"
        return (f"holds the {kind} of experiment {old.get('experiment')}; this is the {new['sweeper']} sweep of "
                f"experiment {new['experiment']}, whose points would mix with its results and replace those in "
                f"the same run directories")
    if old.get("legacy"):
        return None
    old_grid, new_grid = old.get("grid_settings") or {}, new.get("grid_settings") or {}
    shared = old_grid.keys() & new_grid.keys()  # a new or dropped grid setting extends the sweep
    was = {**(old.get("settings") or {}), **{f"grid.settings.{n}": old_grid[n] for n in shared}}
    now = {**new["settings"], **{f"grid.settings.{n}": new_grid[n] for n in shared}}
    keys = sorted(k for k in was.keys() | now.keys() if was.get(k, _UNSET) != now.get(k, _UNSET))
    if not keys:
        return None

    def values(settings: dict[str, Any]) -> str:
        return ", ".join(f"{k}={_shown(settings.get(k, _UNSET))}" for k in keys[:SHOWN])

    more = f" and {len(keys) - SHOWN} more settings" if len(keys) > SHOWN else ""
    return (f"holds experiment {new['experiment']} run with {values(was)}{more}; this sweep has {values(now)}, "
            f"and its points would replace those results")


def way_out() -> str:
    """Another directory, or the same command with the override that extends this one (pasted, it runs)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    return (f"use another hydra.sweep.dir (make: SWEEP_DIR=...), or run here anyway with {EXTEND}: "
            f"{shlex.join([*argv, EXTEND])}")


def check(sweep_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse (SweepDirRefused, one line) a sweep the directory does not hold; reads only (`make plan`)."""
    old = recorded(sweep_dir)
    why = difference(old, identity) if old else None
    if why:
        raise SweepDirRefused(f"{sweep_dir} {why} ({IDENTITY}); {way_out()}")


def claim(sweep_dir: Path, identity: dict[str, Any], extend: bool = False, tag: str = "sweep") -> None:
    """Record the identity on first use; refuse another one unless `extend`, which records this one instead.
    Call it holding the directory's lock (sweep.ownership.hold)."""
    old = recorded(sweep_dir)
    why = difference(old, identity) if old else None
    if why and not extend:
        raise SweepDirRefused(f"{sweep_dir} {why} ({IDENTITY}); {way_out()}")
    if old is None or old.get("legacy") or why:
        earlier = ([{k: v for k, v in old.items() if k != "earlier"}] + list(old.get("earlier") or [])) if old else []
        atomic_write_json(Path(sweep_dir) / IDENTITY, {**identity, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                       **({"earlier": earlier} if earlier else {})})
    if why:
        print(f"[{tag}] {EXTEND}: {sweep_dir} {why}; recorded this sweep as what it holds", flush=True)
