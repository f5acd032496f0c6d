"""Fault injection for sweeps run in subprocesses: with this directory on PYTHONPATH and
SFTSWEEP_TEST_FAULT="<method>", every Python process (the sweeper, and the job runners it starts) gets
a `<method>` loss that raises, so the fault reaches jobs that run in a process of their own."""

import os


def _before_every_loss(wait):
    """Every registered loss first calls `wait()` (a hang, a rendezvous), then computes as before."""
    from trainers.model import losses

    def wrapped(original):
        def loss(*args, **kwargs):
            wait()
            return original(*args, **kwargs)

        return loss

    for name, original in list(losses.LOSSES.items()):
        losses.LOSSES[name] = wrapped(original)


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

    def _hang_after_a_checkpoint():
        while glob.glob(os.path.join(_hang_dir, "checkpoint-*", "trainer_state.json")):
            time.sleep(60)

    _before_every_loss(_hang_after_a_checkpoint)

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

# SFTSWEEP_TEST_RENDEZVOUS="<sweep dir>": a job's training waits (up to 300 s) until another job's progress.json
# under that directory says it is training too, and from then on nobody waits (a marker file says so): so two
# launcher workers that really run at once are seen overlapping, however slowly the second one started, and
# workers that run one after another never are.
_rendezvous = os.environ.get("SFTSWEEP_TEST_RENDEZVOUS")
if _rendezvous:
    import pathlib
    import time

    from trainers.runtime.run_dir import read_progress, read_result

    _met = pathlib.Path(_rendezvous) / ".rendezvous"

    def _training_jobs() -> int:
        run_dirs = {p.parent for p in pathlib.Path(_rendezvous).rglob("progress.json")}
        return sum((read_progress(d) or {}).get("phase") == "training" and read_result(d) is None for d in run_dirs)

    def _meet_another_job():
        waited = time.monotonic()
        while not _met.exists():
            met = _training_jobs() >= 2
            if met or time.monotonic() > waited + 300:  # a slow second worker on a loaded machine still comes
                _met.write_text("met" if met else f"gave up after 300 s: {_training_jobs()} job(s) training under "
                                f"{_rendezvous}, no other job seen training at the same time")
                return
            time.sleep(0.2)

    _before_every_loss(_meet_another_job)

# SFTSWEEP_TEST_SELECT="<lr>:<accuracy>,…" (with SFTSWEEP_TEST_STEP_DELAY="<seconds>"): every report of a job's
# selection accuracy while it trains says the accuracy scripted for its lr, over 400 questions, and every step
# takes at least that delay; so an early-stopping test knows which point is past its method's threshold, and a
# job lasts long enough for the sweeper's monitor to see it (the tiny world's own accuracies are chance and tie).
_select = os.environ.get("SFTSWEEP_TEST_SELECT")
if _select:
    import time

    from trainers.model.loss_trainer import LossTrainer

    _scripted = {float(lr): float(acc) for lr, acc in (pair.split(":") for pair in _select.split(","))}
    _report = LossTrainer.report_selection

    def _scripted_report(self):
        report = _report(self)
        if report is not None:
            report.update(select_accuracy=_scripted[float(self.args.learning_rate)], select_n=400)
        return report

    LossTrainer.report_selection = _scripted_report
    _delay = float(os.environ.get("SFTSWEEP_TEST_STEP_DELAY", "0"))
    _before_every_loss(lambda: time.sleep(_delay))
