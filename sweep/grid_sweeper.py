"""A Hydra sweeper for method grids: validate and plan all → skip done → prepare once → launch → summarize.

Selected by `hydra/sweeper=grid` (experiment files do it), it hands the grid to whatever Hydra
launcher is configured (basic in-process, joblib, submitit local or SLURM), so there is no queue
of our own: it only decides which jobs to launch and reports on them.

    python -m trainers.train -m experiment=default hydra/launcher=submitit_slurm
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweep.early_stop import EarlyStopSpec, early_stop_spec
from sweep.early_stop_monitor import EarlyStopMonitor
from sweep.grid import GridError, GridPoint, expand_grid
from sweep.identity import check, claim, sweep_identity
from sweep.launching import job_identity, launch_recorded, launcher_failure, stop_on_sigterm
from sweep.overrides import GRID_KEYS, grid_override_error
from sweep.ownership import SweepDirRefused, hold
from sweep.planning import apply_request, plan_jobs, sweep_lines, sweep_request
from sweep.progress import ProgressMonitor, planned, summarize, write_plan
from sweep.refine import RefineSpec, refine, refine_spec
from trainers.job.plan import Plan
from trainers.job.validate import INTERMEDIATE_FIX, reports_while_training, validate_config, validate_paths
from trainers.runtime.disk import no_space, no_space_message
from trainers.runtime.errors import ConfigError
from trainers.runtime.run_dir import FAILED, MISSING, SWEEP_PLAN, is_done

log = logging.getLogger(__name__)

PREPARE_SUBDIR = "_prepare"
REFINE_JOB_IDX = 100_000  # Hydra job numbers of refinement jobs start here, apart from the grid's and prepare's


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit: nothing has been launched, nothing computed is touched."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class GridSweeper(Sweeper):
    def __init__(self, poll_interval_s: float = 5.0, prepare: bool = True, rerun_stopped: bool = False,
                 plan_only: bool = False, extend: bool = False):
        self.poll_interval_s = poll_interval_s
        self.prepare = prepare
        self.rerun_stopped = rerun_stopped  # stopped/pruned points are final unless this asks for them again
        self.plan_only = plan_only  # `make plan`: print every job's resource plan, launch nothing
        self.extend = extend  # run here although the directory holds another experiment or settings (sweep.identity)
        self.early_stop: EarlyStopSpec | None = None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        cfg = self.config
        sweep_dir = Path(cfg.hydra.sweep.dir)
        fixed = self._fixed_overrides(arguments)
        if (overwritten := grid_override_error(fixed, cfg.get("grid"))) is not None:
            fail(overwritten)
        try:
            grid = cfg.get("grid")
            points = expand_grid(OmegaConf.to_container(grid, resolve=True) if grid is not None else {})
            refinement = refine_spec(OmegaConf.to_container(grid, resolve=True) if grid is not None else {})
            self.early_stop = early_stop_spec(OmegaConf.to_container(grid, resolve=True) if grid is not None else {})
        except GridError as exc:
            fail(str(exc))
        if self.early_stop is not None and not reports_while_training(cfg.train):
            fail(f"grid.early_stop is enabled but train.eval_steps={cfg.train.get('eval_steps')} and "
                 f"train.report_steps={cfg.train.get('report_steps')}: jobs would report no intermediate accuracy to "
                 f"stop by; {INTERMEDIATE_FIX}")
        jobs = [self._job(fixed, point) for point in points]
        job_cfgs, plans = self._validate(points, jobs)
        request = apply_request(self.launcher, sweep_request(job_cfgs, plans))
        self._own(sweep_dir)
        if self.plan_only:
            for line in sweep_lines(cfg, job_cfgs, plans):
                print(line, flush=True)
            return []
        identities = [job_identity(c) for c in job_cfgs]
        run_dirs = [run_dir for run_dir, _ in identities]
        pending = [i for i, (run_dir, digest) in enumerate(identities)
                   if not is_done(run_dir, digest, self.rerun_stopped)]

        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        write_plan(self._plan_path(), points, run_dirs)
        print(f"[sweep] {cfg.experiment_name}: {len(points)} grid points, {len(points) - len(pending)} already done, "
              f"{len(pending)} to run -> {sweep_dir}", flush=True)
        if request:
            print("[sweep] SLURM request per node (make plan shows why): "
                  + ", ".join(f"{k}={v}" for k, v in request.items()), flush=True)
        returns: list[JobReturn] = []
        stop_on_sigterm()
        try:
            if pending:
                if self.prepare:
                    self._prepare([jobs[i] for i in pending], [job_cfgs[i] for i in pending])
                with ProgressMonitor([run_dirs[i] for i in pending], total=len(points),
                                     already_done=len(points) - len(pending), interval_s=self.poll_interval_s), \
                        self._early_stopping(points, run_dirs, pending):
                    returns = launch_recorded(self.launcher, [jobs[i] for i in pending],
                                              [job_cfgs[i] for i in pending], [run_dirs[i] for i in pending],
                                              initial_job_idx=0)
            by_index = dict(zip(pending, returns, strict=False))
            rounds = None
            if refinement is not None:
                rounds = self._refine(refinement, fixed, points, run_dirs, by_index, prepared=bool(pending))
        except KeyboardInterrupt:
            print(f"[sweep] stopped: jobs that had not finished were stopped or cancelled; rerun the same "
                  f"command to run them (make status SWEEP_DIR={sweep_dir} shows where each point is)",
                  file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except OSError as exc:  # a full disk: no more launches; every job recorded that could be
            if not no_space(exc):
                raise
            fail(no_space_message(sweep_dir), code=1)
        self._summarize(sweep_dir, points, run_dirs, by_index, rounds)
        return returns

    def _own(self, sweep_dir: Path) -> None:
        """Hold the sweep directory and claim it for this experiment (sweep.ownership, sweep.identity); `make plan`,
        which writes nothing, only checks that the sweep would be allowed to run there."""
        grid = self.config.get("grid")
        settings = (OmegaConf.to_container(grid, resolve=True) if grid is not None else {}).get("settings")
        identity = sweep_identity(self.config, "grid", GRID_KEYS, grid_settings=settings)
        try:
            if self.plan_only:
                if not self.extend:
                    check(sweep_dir, identity)
                return
            hold(sweep_dir)
            claim(sweep_dir, identity, self.extend)
        except SweepDirRefused as exc:
            fail(str(exc))

    def _refine(self, spec: RefineSpec, fixed: list[str], points: list[GridPoint], run_dirs: list[Path],
                by_index: dict[int, JobReturn], prepared: bool) -> list[dict[str, Any]]:
        """grid.refine (sweep/refine.py): more learning rates around each method's peak, and seeds where the
        threshold is decided, validated, skipped when done and launched exactly like the grid's own points;
        extends points and run_dirs."""
        state = {"prepared": prepared or not self.prepare, "job_idx": REFINE_JOB_IDX}

        def launch(new: list[GridPoint], what: str) -> list[Path]:
            jobs = [self._job(fixed, p) for p in new]
            job_cfgs, _ = self._validate(new, jobs)
            ids = [job_identity(c) for c in job_cfgs]
            pending = [i for i, (run_dir, digest) in enumerate(ids) if not is_done(run_dir, digest, self.rerun_stopped)]
            print(f"[sweep] refine, {what}: {len(new)} points, {len(new) - len(pending)} already done, "
                  f"{len(pending)} to run", flush=True)
            if pending:
                if not state["prepared"]:
                    self._prepare([jobs[i] for i in pending], [job_cfgs[i] for i in pending])
                    state["prepared"] = True
                write_plan(self._plan_path(), points + new, run_dirs + [run_dir for run_dir, _ in ids])
                with ProgressMonitor([ids[i][0] for i in pending], total=len(new), already_done=len(new) - len(pending),
                                     interval_s=self.poll_interval_s), \
                        self._early_stopping(points + new, run_dirs + [run_dir for run_dir, _ in ids],
                                             [len(points) + i for i in pending]):
                    rets = launch_recorded(self.launcher, [jobs[i] for i in pending], [job_cfgs[i] for i in pending],
                                           [ids[i][0] for i in pending], initial_job_idx=state["job_idx"])
                state["job_idx"] += len(pending)
                by_index.update({len(points) + i: ret for i, ret in zip(pending, rets, strict=False)})
            return [run_dir for run_dir, _ in ids]

        return refine(spec, points, run_dirs, sorted({p.seed for p in points}), launch)

    def _early_stopping(self, points: list[GridPoint], run_dirs: list[Path],
                        pending: Sequence[int]) -> AbstractContextManager:
        """grid.early_stop (sweep/early_stop.py): a monitor that stops running points past their method's
        threshold, judged against every point of the sweep so far; nothing when it is off."""
        if self.early_stop is None:
            return nullcontext()
        return EarlyStopMonitor(points, run_dirs, pending, self.early_stop, self.poll_interval_s)

    def _job(self, fixed: list[str], point: GridPoint) -> list[str]:
        """A point's overrides after the user's; a point of a grid setting runs under a folder of that name."""
        overrides = fixed + point.overrides()
        if point.setting is not None:
            subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["subdir"]
            overrides.append(f"hydra.sweep.subdir={point.setting.name}/{subdir}")
        return overrides

    def _plan_path(self) -> Path:
        return Path(self.config.hydra.sweep.dir) / SWEEP_PLAN

    def _fixed_overrides(self, arguments: list[str]) -> list[str]:
        """The user's overrides, applied to every job; sweeps over them belong in the grid."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed = []
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                fail(f"{override.input_line}: the grid sweeper takes its lists from the experiment's grid "
                      f"(grid.methods.<method>.lr / .beta, grid.seeds); set them there or as grid.* overrides")
            fixed.append(override.input_line)
        return fixed

    def _validate(self, points: list[GridPoint], jobs: list[list[str]]) -> tuple[list[DictConfig], list[Plan]]:
        """Compose and check every job's config, its resource plan included, before anything launches;
        report every bad point. Each job's config and plan."""
        loader = self.hydra_context.config_loader
        job_cfgs, plans, errors = [], [], []
        for point, overrides in zip(points, jobs, strict=True):
            try:
                job_cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=overrides)
                validate_config(job_cfg)
                if not job_cfg.model.get("embedded"):
                    validate_paths(job_cfg)
                (plan,) = plan_jobs([job_cfg])
            except ConfigError as exc:
                errors.append(f"{point.label()}: {exc}")
                continue
            except Exception as exc:  # a composition error names the override at fault
                errors.append(f"{point.label()}: {str(exc).splitlines()[0]}")
                continue
            job_cfgs.append(job_cfg)
            plans.append(plan)
        messages = {line.split(": ", 1)[1] for line in errors}
        if len(errors) == len(points) > 1 and len(messages) == 1:  # one cause for every point (a model): one line
            fail(f"{errors[0]} (the same for all {len(errors)} grid points)")
        if errors:
            for line in errors[:-1]:
                print(f"error: {line}", file=sys.stderr)
            fail(errors[-1] + (f" ({len(errors)} grid points are invalid)" if len(errors) > 1 else ""))
        return job_cfgs, plans

    def _prepare(self, jobs: list[list[str]], job_cfgs: list[DictConfig]) -> None:
        """One prepare job per (model, data): tokenized data, base scores and reference log-probs cached.

        It runs through the configured launcher, so on SLURM it runs on a compute node.
        """
        groups: dict[str, int] = {}
        for i, c in enumerate(job_cfgs):
            parts = [OmegaConf.to_container(c[k], resolve=True) for k in ("model", "data")] + [str(c.paths.cache_dir)]
            key = json.dumps(parts, sort_keys=True, default=str)
            groups.setdefault(key, i)
        for n, i in enumerate(groups.values()):
            started = time.time()
            print(f"[sweep] preparing {job_cfgs[i].model.name} × {job_cfgs[i].data.name} "
                  f"(tokenized data, base accuracy, reference log-probs; cached)", flush=True)
            overrides = jobs[i] + ["prepare_only=true", f"hydra.sweep.subdir={PREPARE_SUBDIR}/{n}"]
            try:
                (ret,) = self.launcher.launch([overrides], initial_job_idx=len(jobs) + n)
            except Exception as exc:  # the launcher lost the prepare job (cancelled, node failure)
                fail(f"prepare failed before any job launched: {launcher_failure(exc)}")
            if ret.status != JobStatus.COMPLETED:
                exc = ret._return_value
                if no_space(exc):
                    fail(no_space_message(Path(self.config.hydra.sweep.dir)), code=1)
                fail(f"prepare failed before any job launched: {str(exc).splitlines()[0] if exc else 'unknown'}")
            print(f"[sweep] prepared in {time.time() - started:.0f}s", flush=True)

    def _summarize(self, sweep_dir: Path, points: list[GridPoint], run_dirs: list[Path],
                   returns: dict[int, JobReturn], refinement: list[dict[str, Any]] | None = None) -> None:
        """Final counts, failures by name, sweep_summary.json; exit 1 if any point failed or is missing."""
        try:
            counts = summarize(sweep_dir, self.config.experiment_name, planned(points, run_dirs, sweep_dir),
                               run_dirs, returns, extra={"refine": refinement} if refinement is not None else None)
        except OSError as exc:
            if not no_space(exc):
                raise
            fail(no_space_message(sweep_dir), code=1)
        if counts[FAILED] or counts[MISSING]:
            raise SystemExit(1)
