"""Registers sftsweep's grid sweeper with Hydra, which only loads plugins from `hydra_plugins.*`.

The sweeper itself lives in sweep/grid_sweeper.py; this subclass only gives it a module name
inside the namespace Hydra scans.
"""

from sweep.grid_sweeper import GridSweeper as _GridSweeper


class GridSweeper(_GridSweeper):
    """See sweep.grid_sweeper.GridSweeper."""
