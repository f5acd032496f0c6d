"""hydra-joblib-launcher's launcher, with loky workers that end with their sweeper, SIGKILL included.

loky's workers wait for queued jobs in processes of their own: a SIGKILLed sweeper left them running the
jobs already queued, and idle ones waiting minutes for more. Each worker here holds on to the sweeper from
its start (loky's initializer: trainers/runtime/lifeline.py) and SIGKILLs itself within half a second
of the sweeper's end; the job runner it started ends with it.

Selected by `conf/launcher/joblib.yaml` (`hydra.launcher._target_`); the rest is the library's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _JoblibLauncher
from joblib import register_parallel_backend
from joblib._parallel_backends import LokyBackend

from trainers.runtime.lifeline import hold


class LokyHoldingOn(LokyBackend):
    """joblib's loky backend whose workers run `lifeline.hold` as they start."""

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        return super().configure(n_jobs, parallel, **{**kwargs, "initializer": hold})


class JoblibLauncher(_JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        register_parallel_backend("loky", LokyHoldingOn)  # the library's launch asks joblib for "loky" by name
        return super().launch(job_overrides, initial_job_idx)
