"""Registers sftsweep's submitit launchers with Hydra (plugins load only from `hydra_plugins.*`).

The logic lives in sweep/submitit_launchers.py: the library's launchers, with every job's end
collected on its own, so that one cancelled or out-of-memory job never ends the sweep.
"""

from sweep.submitit_launchers import LocalLauncher as _LocalLauncher
from sweep.submitit_launchers import SlurmLauncher as _SlurmLauncher


class LocalLauncher(_LocalLauncher):
    """See sweep.submitit_launchers.LocalLauncher."""


class SlurmLauncher(_SlurmLauncher):
    """See sweep.submitit_launchers.SlurmLauncher."""
