"""Registers sftsweep's joblib launcher with Hydra (plugins load only from `hydra_plugins.*`).

The logic lives in sweep/joblib_launcher.py: the library's launcher, with workers that end with the sweeper.
"""

from sweep.joblib_launcher import JoblibLauncher as _JoblibLauncher


class JoblibLauncher(_JoblibLauncher):
    """See sweep.joblib_launcher.JoblibLauncher."""
