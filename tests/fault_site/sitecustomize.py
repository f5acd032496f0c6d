"""Fault injection for sweeps run in subprocesses: with this directory on PYTHONPATH and
SFTSWEEP_TEST_FAULT="<method>", every Python process (the sweeper, and the job runners it starts) gets
a `<method>` loss that raises, so the fault reaches jobs that run in a process of their own."""

import os

_method = os.environ.get("SFTSWEEP_TEST_FAULT")
if _method:
    from trainers.model import losses

    def _exploding(*args, **kwargs):
        raise RuntimeError(f"{_method} exploded")

    losses.LOSSES[_method] = _exploding
