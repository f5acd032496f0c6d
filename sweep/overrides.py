"""Command-line overrides that every grid point would overwrite are refused before anything runs.

Each grid point appends its own `method=…`, `train.lr=…`, `method.beta=…` and `seed=…` after the
user's overrides, so a user's `train.lr=2e-4` would silently lose to the grid and the whole default
grid would run. This module names the grid field to change instead, in one line. Keys that are not
grid coordinates (including typos) are left to Hydra, which reports them itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser

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
    if key == "method":
        return f"grid.methods (e.g. keep only {value}: grid.methods='{{{value}:{{lr:[1e-3]}}}}')"
    field = "lr" if key == "train.lr" else "beta"
    methods = _methods(grid, beta_only=field == "beta") or ["<method>"]
    return " / ".join(f"grid.methods.{m}.{field}={_listed(value)}" for m in methods)


def grid_override_error(arguments: Iterable[str], grid: Mapping | None) -> str | None:
    """One line naming the first override that a grid coordinate would overwrite, or None."""
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element().lstrip("+~")
        if key in GRID_KEYS:
            value = override.input_line.split("=", 1)[1] if "=" in override.input_line else "..."
            return (f"{override.input_line}: every grid point sets {key} itself, so this override would be "
                    f"ignored; set {_instead(key, value, grid)} instead")
    return None
