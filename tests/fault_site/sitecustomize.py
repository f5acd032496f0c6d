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

# SFTSWEEP_TEST_HANG="<checkpoints dir>": every training loss hangs once a checkpoint there is complete (its
# trainer_state.json written), so a test can kill the job after its first checkpoint, never after its end.
_hang_dir = os.environ.get("SFTSWEEP_TEST_HANG")
if _hang_dir:
    import glob
    import time

    from trainers.model import losses

    def _hanging(original):
        def loss(*args, **kwargs):
            while glob.glob(os.path.join(_hang_dir, "checkpoint-*", "trainer_state.json")):
                time.sleep(60)
            return original(*args, **kwargs)

        return loss

    for _name, _loss in list(losses.LOSSES.items()):
        losses.LOSSES[_name] = _hanging(_loss)
