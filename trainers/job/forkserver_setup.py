"""Imported first by the job runner's forkserver (its preload): the forkserver ends with the launcher's process
that started it, and ignores SIGTERM and SIGUSR2, as the runner it forks does (trainers.job.isolate).

A SIGTERM sent to a whole job (SLURM does so before a requeue, a cancel or at the time limit, then
SIGKILL) must leave the job running until that SIGKILL, as it did when the job ran in the launcher's
own process. Were the forkserver to die of it, the runner would die with it (it is killed when its
parent dies) and the launcher's process would see its job vanish and report a result before the
scheduler ends it, which breaks a requeue: the requeued job would find that result and never run.
SLURM's time-limit warning (SIGUSR2) also goes to every process of the job: it is the launcher's (submitit
has the job save a checkpoint, then requeues it), and the default action of SIGUSR2 would end the forkserver,
and the runner with it, before the job could save.
"""

import signal

from trainers.runtime.lifeline import die_with_parent

die_with_parent()  # a launcher's process that is gone (a killed joblib worker) takes its forkserver at once
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
