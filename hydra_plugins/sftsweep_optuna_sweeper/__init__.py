"""Registers sftsweep's resumable Optuna sweeper with Hydra (plugins load only from `hydra_plugins.*`).

The logic lives in sweep/optuna_search.py.
"""

from sweep.optuna_search import ResumableOptunaSweeper as _ResumableOptunaSweeper


class ResumableOptunaSweeper(_ResumableOptunaSweeper):
    """See sweep.optuna_search.ResumableOptunaSweeper."""
