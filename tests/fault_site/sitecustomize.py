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

# SFTSWEEP_TEST_PEAK_LR="<lr>": the sweeper scores a finished run by a known curve of its lr peaking there
# (0.7 - 0.3 * log10(lr / peak)^2) instead of its selection-split accuracy, which on the tiny world is chance
# and ties; so a refinement test has a known interior peak.
_peak_lr = os.environ.get("SFTSWEEP_TEST_PEAK_LR")
if _peak_lr:
    import math

    from trainers.data import selection

    def _scripted_score(result):
        if not result or result.get("status") != "ok":
            return None
        return 0.7 - 0.3 * math.log10(result["lr"] / float(_peak_lr)) ** 2

    selection.run_score = _scripted_score

# SFTSWEEP_TEST_RENDEZVOUS="<sweep dir>": a job's training waits (up to 90 s) until another job's progress.json
# under that directory says it is training too, and from then on nobody waits (a marker file says so): so two
# launcher workers that really run at once are seen overlapping, however slowly the second one started, and
# workers that run one after another never are.
_rendezvous = os.environ.get("SFTSWEEP_TEST_RENDEZVOUS")
if _rendezvous:
    import json
    import pathlib
    import time

    from trainers.model import losses

    _met = pathlib.Path(_rendezvous) / ".rendezvous"

    def _training_jobs() -> int:
        count = 0
        for progress in pathlib.Path(_rendezvous).rglob("progress.json"):
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                continue
            count += state.get("phase") == "training" and not (progress.parent / "result.json").exists()
        return count

    def _meeting(original):
        def loss(*args, **kwargs):
            deadline = time.monotonic() + 90
            while not _met.exists():
                if _training_jobs() >= 2 or time.monotonic() > deadline:
                    _met.write_text("met" if _training_jobs() >= 2 else "gave up")
                    break
                time.sleep(0.2)
            return original(*args, **kwargs)

        return loss

    for _name, _loss in list(losses.LOSSES.items()):
        losses.LOSSES[_name] = _meeting(_loss)
