"""Optuna search over β (and optionally the learning rate) through hydra-optuna-sweeper.

hydra-optuna-sweeper 1.1.2 is the release that runs with current Optuna, and three of its
behaviours break a long search; this subclass keeps its config, sampler and search
space and changes only the trial loop:
- `n_trials` is the study's total: a rerun runs only the trials still missing, so a killed or
  extended search continues the same study from its storage;
- a rerun reseeds the sampler, so it does not replay the same start-up trials (the same β again);
- a trial that diverged (no accuracy), failed, or died (killed, cancelled: `sweep.launching`) is told to
  Optuna as FAIL and the search goes on; it never crashes the study and is never given a made-up accuracy.
Pruning from intermediate accuracy is not possible here: each trial is a separate Hydra job
(possibly a SLURM task) whose only channel back to the sweeper is its return value.

Storage: `sqlite:///<file>` on one box; `journal:///<file>` selects Optuna's JournalStorage on a
plain file, which (unlike SQLite) is safe on the shared filesystems SLURM clusters use.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from sweep.grid_sweeper import fail
from sweep.launching import job_identity, launch_recorded, stop_on_sigterm
from sweep.planning import apply_request, plan_jobs, sweep_request
from trainers.job.validate import validate_config
from trainers.model.losses import BETA_METHODS
from trainers.runtime.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:///"


def open_storage(url: str | None) -> Any:
    """An Optuna storage from a URL; journal:///path is a file journal that works over NFS."""
    if url and url.startswith(JOURNAL_PREFIX):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path("/" + url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url and url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


def trial_value(ret: Any) -> float | None:
    """The trial's accuracy, or None if the job failed (raised) or diverged (returned None/NaN)."""
    try:
        value = ret.return_value
    except Exception as exc:  # the job's own exception, re-raised by Hydra's JobReturn
        log.warning("trial failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        search_space = dict(impl.search_space)
        fixed: dict[str, Any] = {}
        for override in OverridesParser.create().parse_overrides(arguments):
            value = create_optuna_distribution_from_override(override)
            if isinstance(value, optuna.distributions.BaseDistribution):
                search_space[override.get_key_element()] = value
            else:
                fixed[override.get_key_element()] = value
                search_space.pop(override.get_key_element(), None)

        self._validate(search_space)
        direction = impl.direction if isinstance(impl.direction, str) else impl.direction.name
        study = optuna.create_study(study_name=impl.study_name, storage=open_storage(impl.storage),
                                    sampler=impl.sampler, direction=direction, load_if_exists=True)
        states = optuna.trial.TrialState
        for stale in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
            study.tell(stale.number, state=states.FAIL)  # a killed earlier run's unfinished trials
        done = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.FAIL, states.PRUNED)))
        if done and hasattr(impl.sampler, "reseed_rng"):
            impl.sampler.reseed_rng()
        to_go = max(0, impl.n_trials - done)
        print(f"[optuna] study {study.study_name}: {done} trials done, {to_go} to run (n_trials={impl.n_trials}) "
              f"-> {impl.storage}", flush=True)

        job_idx = len(study.trials)
        stop_on_sigterm()
        try:
            while to_go > 0:
                trials = [study.ask() for _ in range(min(to_go, impl.n_jobs))]
                overrides = []
                for trial in trials:
                    for name, distribution in search_space.items():
                        trial._suggest(name, distribution)
                    params = {**trial.params, **fixed}
                    overrides.append(tuple(f"{name}={value}" for name, value in params.items()))
                jobs = [list(o) for o in overrides]
                job_cfgs = [impl.hydra_context.config_loader.load_sweep_config(master_config=impl.config,
                                                                               sweep_overrides=job) for job in jobs]
                run_dirs = [job_identity(c)[0] for c in job_cfgs]
                returns = launch_recorded(impl.launcher, jobs, job_cfgs, run_dirs, initial_job_idx=job_idx)
                job_idx += len(returns)
                for trial, ret in zip(trials, returns, strict=True):
                    value = trial_value(ret)
                    if value is None:
                        study.tell(trial, state=states.FAIL)
                    else:
                        study.tell(trial, value)
                    print(f"[optuna] trial {trial.number} {trial.params}: "
                          f"{'failed or diverged' if value is None else f'accuracy {value:.4f}'}", flush=True)
                to_go -= len(trials)
        except KeyboardInterrupt:
            print("[optuna] stopped: the running trials were stopped or cancelled and count as failed; rerun the "
                  "same command to continue the study", file=sys.stderr, flush=True)
            raise SystemExit(130) from None

        completed = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
        if not completed:
            print("[optuna] no trial completed: every trial failed or diverged", flush=True)
            raise SystemExit(1)
        best = study.best_trial
        print(f"[optuna] best of {len(completed)} completed trials: {best.params} accuracy {best.value:.4f}",
              flush=True)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value,
                                         "n_completed": len(completed)}),
                       Path(impl.config.hydra.sweep.dir) / "optimization_results.yaml")

    def _validate(self, search_space: dict[str, Any]) -> None:
        """Input errors stop the search before its first trial, in one line."""
        config = self.sweeper.config
        try:
            validate_config(config)
            apply_request(self.sweeper.launcher, sweep_request([config], plan_jobs([config])))
        except ConfigError as exc:
            fail(str(exc))
        if "method.beta" in search_space and config.method.name not in BETA_METHODS:
            fail(f"method={config.method.name} takes no β, so a β search would train the same model every trial; "
                  f"use METHOD=one of {', '.join(sorted(BETA_METHODS))}")
        if self.sweeper.n_trials < 1:
            fail(f"hydra.sweeper.n_trials={self.sweeper.n_trials}: the study's total number of trials must be >= 1")
