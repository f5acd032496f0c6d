"""Optuna search over β (and optionally the learning rate) through hydra-optuna-sweeper.

hydra-optuna-sweeper 1.1.2 is the release that runs with current Optuna, and three of its
behaviours break a long search; this subclass keeps its config, sampler and search
space and changes only the trial loop:
- `n_trials` is the study's total: a rerun runs only the trials still missing, so a killed or
  extended search continues the same study from its storage;
- a rerun reseeds the sampler, so it does not replay the same start-up trials (the same β again);
- a trial that diverged (no accuracy), failed, or died (killed, cancelled: `sweep.launching`) is told to
  Optuna as FAIL and the search goes on; it never crashes the study and is never given a made-up accuracy;
- `pruner` (any `optuna.pruners.*`, by `_target_`; the 1.1.2 schema has no such key, hence
  `SftsweepOptunaSweeperConf`) prunes trials from their intermediate selection accuracy, read from their
  run directories while they train (`sweep.pruning`); a pruned trial is told as PRUNED.

Storage: `sqlite:///<file>` on one box; `journal:///<file>` selects Optuna's JournalStorage on a
plain file, which (unlike SQLite) is safe on the shared filesystems SLURM clusters use.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from sweep.grid import GridPoint
from sweep.grid_sweeper import fail
from sweep.identity import check, claim, difference, sweep_identity, way_out
from sweep.launching import job_identity, launch_recorded, stop_on_sigterm
from sweep.ownership import SweepDirRefused, hold
from sweep.planning import apply_request, plan_jobs, sweep_request
from sweep.progress import extend_plan, plan_run_dir, read_plan, summarize
from sweep.pruning import PruningMonitor
from sweep.sweep_dir import sweep_dir_error
from trainers.job.validate import INTERMEDIATE_FIX, reports_while_training, validate_config
from trainers.runtime.disk import no_space, no_space_message
from trainers.runtime.errors import ConfigError
from trainers.runtime.methods import BETA_METHODS
from trainers.runtime.run_dir import PRUNED, SWEEP_PLAN, read_result

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:///"
STUDY_IDENTITY = "sftsweep_identity"  # the study's user attribute: the identity of the sweep that made its trials


@dataclass
class SftsweepOptunaSweeperConf(OptunaSweeperConf):
    """hydra-optuna-sweeper's schema plus what this sweeper adds: `hydra/sweeper=sftsweep_optuna`."""

    _target_: str = "hydra_plugins.sftsweep_optuna_sweeper.ResumableOptunaSweeper"
    pruner: Any = None  # an optuna.pruners.* config: {_target_: optuna.pruners.MedianPruner, ...}; null: none
    poll_interval_s: float = 2.0  # how often running trials' intermediate values are read
    extend: bool = False  # continue the study although its config changed (sweep.identity)


# hydra-optuna-sweeper 1.1.2 passes every TPESampler argument of its schema and builds LogUniformDistribution: six
# FutureWarnings on every `make optuna` that no user setting can silence (the schema is the plugin's). Only these.
PLUGIN_DEPRECATIONS = ("`consider_prior`", "`prior_weight`", "`consider_magic_clip`", "`consider_endpoints`",
                       "`warn_independent_sampling`", "LogUniformDistribution")


@contextmanager
def quiet_plugin_deprecations() -> Iterator[None]:
    """Silence the plugin's own deprecation warnings (PLUGIN_DEPRECATIONS) in this block, and nothing else."""
    with warnings.catch_warnings():
        for name in PLUGIN_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=re.escape(name) + " has been deprecated", category=FutureWarning)
        yield


def tpe_sampler(**kwargs: Any) -> optuna.samplers.TPESampler:
    """optuna.samplers.TPESampler from the plugin's sampler config (`hydra.sweeper.sampler._target_` in
    conf/hparams_search/beta_optuna.yaml), without the warnings about the arguments the plugin always passes."""
    with quiet_plugin_deprecations():
        return optuna.samplers.TPESampler(**kwargs)


ConfigStore.instance().store(group="hydra/sweeper", name="sftsweep_optuna", node=SftsweepOptunaSweeperConf,
                             provider="sftsweep")


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


def trial_point(job_cfg: DictConfig) -> GridPoint:
    """A trial as a point of the sweep's plan: the method, learning rate, β and seed its config ended up with."""
    return GridPoint(method=job_cfg.method.name, lr=float(job_cfg.train.lr), beta=job_cfg.method.get("beta"),
                     seed=int(job_cfg.seed))


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


def tell(study: optuna.Study, trial: optuna.trial.Trial, ret: Any, run_dir: Path) -> str:
    """Tell the study how a trial ended (PRUNED when its job ended pruned, whatever the launcher returned);
    what happened, in words."""
    states = optuna.trial.TrialState
    result = read_result(run_dir) or {}
    if result.get("status") == PRUNED:
        study.tell(trial, state=states.PRUNED)
        return f"pruned at step {result.get('steps')}"
    value = trial_value(ret)
    if value is None:
        study.tell(trial, state=states.FAIL)
        return "failed or diverged"
    study.tell(trial, value)
    return f"accuracy {value:.4f}"


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(self, *args: Any, pruner: Any = None, poll_interval_s: float = 2.0, extend: bool = False,
                 **kwargs: Any):
        with quiet_plugin_deprecations():  # the search space's LogUniformDistribution
            super().__init__(*args, **kwargs)
        if pruner is not None and not isinstance(pruner, optuna.pruners.BasePruner):
            fail(f"hydra.sweeper.pruner={pruner!r} is not an Optuna pruner; give one as "
                 "{_target_:optuna.pruners.MedianPruner,...} (in make's ARGS, inside single quotes)")
        self.pruner, self.poll_interval_s, self.extend = pruner, float(poll_interval_s), bool(extend)

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        search_space = dict(impl.search_space)
        fixed: dict[str, Any] = {}
        for override in OverridesParser.create().parse_overrides(arguments):
            with quiet_plugin_deprecations():
                value = create_optuna_distribution_from_override(override)
            if isinstance(value, optuna.distributions.BaseDistribution):
                search_space[override.get_key_element()] = value
            else:
                fixed[override.get_key_element()] = value
                search_space.pop(override.get_key_element(), None)

        self._validate(search_space)
        direction = impl.direction if isinstance(impl.direction, str) else impl.direction.name
        identity = self._own(search_space, direction)
        study = optuna.create_study(study_name=impl.study_name, storage=open_storage(impl.storage),
                                    sampler=impl.sampler, pruner=self.pruner or optuna.pruners.NopPruner(),
                                    direction=direction, load_if_exists=True)
        self._carry(study, identity)
        states = optuna.trial.TrialState
        for stale in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
            study.tell(stale.number, state=states.FAIL)  # a killed earlier run's unfinished trials
        done = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.FAIL, states.PRUNED)))
        if done and hasattr(impl.sampler, "reseed_rng"):
            impl.sampler.reseed_rng()
        to_go = max(0, impl.n_trials - done)
        pruning = f", pruner {type(self.pruner).__name__}" if self.pruner else ""
        print(f"[optuna] study {study.study_name}: {done} trials done, {to_go} to run (n_trials={impl.n_trials}"
              f"{pruning}) -> {impl.storage}", flush=True)

        job_idx = len(study.trials)
        sweep_dir = Path(impl.config.hydra.sweep.dir)
        plan_path, returned = sweep_dir / SWEEP_PLAN, {}
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
                extend_plan(plan_path, [trial_point(c) for c in job_cfgs], run_dirs)  # make status sees them now
                with PruningMonitor(trials, run_dirs, since=time.time(), interval_s=self.poll_interval_s,
                                    prune=self.pruner is not None):
                    returns = launch_recorded(impl.launcher, jobs, job_cfgs, run_dirs, initial_job_idx=job_idx)
                job_idx += len(returns)
                returned.update({plan_run_dir(d, sweep_dir): ret for d, ret in zip(run_dirs, returns, strict=False)})
                for trial, ret, run_dir in zip(trials, returns, run_dirs, strict=True):
                    print(f"[optuna] trial {trial.number} {trial.params}: {tell(study, trial, ret, run_dir)}",
                          flush=True)
                to_go -= len(trials)
        except KeyboardInterrupt:
            print("[optuna] stopped: the running trials were stopped or cancelled and count as failed; rerun the "
                  "same command to continue the study", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except OSError as exc:  # a full disk: no more trials; those that ended are recorded where they could be
            if not no_space(exc):
                raise
            fail(no_space_message(sweep_dir), code=1)
        self._summarize(sweep_dir, plan_path, returned)

        completed = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
        if not completed:
            print("[optuna] no trial completed: every trial failed, diverged or was pruned", flush=True)
            raise SystemExit(1)
        best = study.best_trial
        n_pruned = len(study.get_trials(deepcopy=False, states=(states.PRUNED,)))
        print(f"[optuna] best of {len(completed)} completed trials ({n_pruned} pruned): {best.params} "
              f"accuracy {best.value:.4f}", flush=True)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value,
                                         "n_completed": len(completed)}),
                       Path(impl.config.hydra.sweep.dir) / "optimization_results.yaml")

    def _summarize(self, sweep_dir: Path, plan_path: Path, returned: dict[str, Any]) -> None:
        """sweep_summary.json over every trial the plan lists (this run's and a continued study's earlier ones),
        as the grid sweeper writes it: the report's unfinished table and `make status` read it."""
        entries = read_plan(plan_path)
        try:
            summarize(sweep_dir, self.sweeper.config.experiment_name, entries,
                      [sweep_dir / e.run_dir for e in entries],
                      {i: returned[e.run_dir] for i, e in enumerate(entries) if e.run_dir in returned})
        except OSError as exc:
            if not no_space(exc):
                raise
            fail(no_space_message(sweep_dir), code=1)

    def _own(self, search_space: dict[str, Any], direction: str) -> dict[str, Any]:
        """Hold the sweep directory and check that it holds this study's config (sweep.ownership, sweep.identity):
        the searched keys vary, everything else a trial's config hash covers, the search space and direction may
        not. `_carry` records it once the study agrees."""
        space = {f"search_space.{k}": optuna.distributions.distribution_to_json(d) for k, d in search_space.items()}
        identity = sweep_identity(self.sweeper.config, "optuna", search_space, extra={**space, "direction": direction})
        sweep_dir = Path(self.sweeper.config.hydra.sweep.dir)
        try:
            hold(sweep_dir, tag="optuna")
            if not self.extend:
                check(sweep_dir, identity)
        except SweepDirRefused as exc:
            fail(str(exc))
        return identity

    def _carry(self, study: optuna.Study, identity: dict[str, Any]) -> None:
        """The study carries its identity, so that a study in storage shared by several sweep directories is
        never continued under another config unannounced; then the sweep directory records it."""
        old = study.user_attrs.get(STUDY_IDENTITY)
        why = difference(old, identity) if old else None
        if why and not self.extend:
            fail(f"study {study.study_name} in {self.sweeper.storage} {why}; {way_out()}")
        if why:
            print(f"[optuna] hydra.sweeper.extend=true: study {study.study_name} {why}; continuing it", flush=True)
        if why or not old:
            study.set_user_attr(STUDY_IDENTITY, identity)
        claim(Path(self.sweeper.config.hydra.sweep.dir), identity, self.extend, tag="optuna")

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
        if self.pruner is not None and not reports_while_training(config.train):
            fail(f"hydra.sweeper.pruner is set but train.eval_steps={config.train.get('eval_steps')} and "
                 f"train.report_steps={config.train.get('report_steps')}: trials would report no intermediate "
                 f"accuracy to prune by; {INTERMEDIATE_FIX}")
        if self.sweeper.n_trials < 1:
            fail(f"hydra.sweeper.n_trials={self.sweeper.n_trials}: the study's total number of trials must be >= 1")
        if (unwritable := sweep_dir_error(Path(config.hydra.sweep.dir))) is not None:
            fail(unwritable)
