"""Imported first by the job runner's forkserver (its preload): the forkserver ignores SIGTERM, as the runner
it forks does (trainers.job.isolate).

A SIGTERM sent to a whole job (SLURM does so before a requeue, a cancel or at the time limit, then
SIGKILL) must leave the job running until that SIGKILL, as it did when the job ran in the launcher's
own process. Were the forkserver to die of it, the runner would die with it (it is killed when its
parent dies) and the launcher's process would see its job vanish and report a result before the
scheduler ends it, which breaks a requeue: the requeued job would find that result and never run.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
