"""Command-line overrides that every grid point (or a grid setting) would overwrite are refused before anything runs.

Each grid point appends its own `method=…`, `train.lr=…`, `method.beta=…` and `seed=…` after the
user's overrides, so a user's `train.lr=2e-4` would silently lose to the grid and the whole default
grid would run. This module names the grid field to change instead, in one line. Keys that are not
grid coordinates (including typos) are left to Hydra, which reports them itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from trainers.runtime.methods import BETA_METHODS

# The keys GridPoint.overrides() sets on every job (sweep/grid.py).
GRID_KEYS = ("method", "train.lr", "method.beta", "seed")


def _methods(grid: Mapping | None, beta_only: bool = False) -> list[str]:
    methods = (grid or {}).get("methods") or {}
    return [m for m, spec in methods.items() if not beta_only or (spec or {}).get("beta") is not None]


def _listed(value: str) -> str:
    """`2e-4` -> `[2e-4]`; a list stays as typed."""
    return value if value.startswith("[") else f"[{value}]"


def _instead(key: str, value: str, grid: Mapping | None) -> str:
    """The grid field(s) that set `key`, with the user's value in place."""
    if key == "seed":
        return f"grid.seeds={_listed(value)}"
    field = "lr" if key == "train.lr" else "beta"
    methods = _methods(grid, beta_only=field == "beta") or ["<method>"]
    return " / ".join(f"grid.methods.{m}.{field}={_listed(value)}" for m in methods)


def only_method(method: str, grid: Mapping | None) -> str:
    """Overrides that replace grid.methods by `method` alone (its grid entry, else lr 1e-3 and β 0.1).

    `grid.methods='{sft:…}'` alone would not: Hydra merges a dict override into the experiment's dict, so
    the other methods stay. `~grid.methods` deletes the entry first, `+grid.methods=` adds the new one.
    """
    spec = dict(((grid or {}).get("methods") or {}).get(method) or {})
    lrs = spec.get("lr") or [1e-3]
    lrs = list(lrs) if isinstance(lrs, Sequence) else [lrs]
    fields = [f"lr:[{','.join(f'{v:g}' for v in lrs)}]"]
    if method in BETA_METHODS:
        betas = spec.get("beta") or [0.1]
        betas = list(betas) if isinstance(betas, Sequence) else [betas]
        fields.append(f"beta:[{','.join(f'{v:g}' for v in betas)}]")
    return f"'~grid.methods' '+grid.methods={{{method}:{{{','.join(fields)}}}}}'"


def _setting_keys(grid: Mapping | None) -> dict[str, str]:
    """key -> the first grid.settings entry that sets it (each setting's overrides follow the user's)."""
    keys: dict[str, str] = {}
    settings = (grid or {}).get("settings") or {}
    for name, overrides in (settings.items() if isinstance(settings, Mapping) else ()):
        for o in [overrides] if isinstance(overrides, str) else (overrides or []):
            if isinstance(o, str) and "=" in o:
                keys.setdefault(o.split("=", 1)[0].lstrip("+~"), name)
    return keys


def grid_override_error(arguments: Iterable[str], grid: Mapping | None) -> str | None:
    """One line naming the first override that a grid coordinate or a grid setting would overwrite, or None."""
    parser = OverridesParser.create()
    by_setting = _setting_keys(grid)
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element().lstrip("+~")
        if key in by_setting:
            return (f"{override.input_line}: grid.settings.{by_setting[key]} sets {key} itself, so this override "
                    f"would be ignored; change it in grid.settings, or drop grid.settings (grid.settings=null)")
        if key == "method" and "=" in override.input_line:
            value = override.input_line.split("=", 1)[1]
            return (f"{override.input_line}: every grid point sets method itself, so this override would be "
                    f"ignored; to run only {value}, replace grid.methods: {only_method(value, grid)}")
        if key in GRID_KEYS:
            value = override.input_line.split("=", 1)[1] if "=" in override.input_line else "..."
            return (f"{override.input_line}: every grid point sets {key} itself, so this override would be "
                    f"ignored; set {_instead(key, value, grid)} instead")
    return None
