"""The sweep's resource plan: every job's plan (trainers/job/plan.py) checked before anything launches, the
SLURM request filled in from it where the user left a field unset, and the per-sweep totals `make plan` prints.

The sweepers call `plan_sweep` on the job configs they have just validated, so the plan, the refusal and
the request come from the same composed configs the jobs will run with.
"""

from __future__ import annotations

from collections import Counter

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from trainers.job.plan import (
    GB,
    Plan,
    check_fits,
    effective_request,
    launcher_kind,
    make_plan,
    on_slurm,
    plan_lines,
)


def plan_jobs(job_cfgs: list[DictConfig]) -> list[Plan]:
    """Each job's plan; ConfigError for the first job that cannot fit."""
    plans = []
    for cfg in job_cfgs:
        HydraConfig.instance().set_config(cfg)  # its paths read ${hydra:runtime.cwd}
        plan = make_plan(cfg)
        check_fits(cfg, plan)
        plans.append(plan)
    return plans


def sweep_request(job_cfgs: list[DictConfig], plans: list[Plan]) -> dict[str, int]:
    """The per-node request one job array needs: the largest of its jobs' (user-set fields kept)."""
    request: dict[str, int] = {}
    for cfg, plan in zip(job_cfgs, plans, strict=True):
        for key, value in effective_request(cfg, plan).items():
            request[key] = max(request.get(key, value), value)
    return request


def apply_request(launcher: object, request: dict[str, int]) -> dict[str, int]:
    """Fill the launcher's unset fields (null in conf/launcher/slurm.yaml) from the plan's request."""
    fill = getattr(launcher, "fill_request", None)
    return fill(request) if fill is not None and request else {}


def jobs_at_once(cfg: DictConfig, n_jobs: int) -> int:
    """How many of the sweep's jobs run at the same time under its launcher."""
    if launcher_kind(cfg) == "submitit_local":  # one local process per job, all started at once
        return max(1, n_jobs)
    launcher = cfg.hydra.launcher
    at_once = launcher.get("array_parallelism") or launcher.get("n_jobs") or 1
    return max(1, min(int(at_once), n_jobs))


def checkpoints_held(cfg: DictConfig) -> tuple[int, int]:
    """(while a job runs, after it ended) checkpoints one job holds on disk: up to save_total_limit plus the
    one being written; after an ok end none unless `train.keep_checkpoints` (kept when the key is absent).
    A job saves when `train.save_steps` or `train.checkpoint_every_min` asks, and on SLURM at every
    time-limit or preemption warning whatever they say (trainers/job/save_request.py)."""
    t = cfg.train
    saves = bool(t.get("save_steps")) or bool(t.get("checkpoint_every_min")) or on_slurm(cfg)
    if not saves:
        return 0, 0
    limit = int(t.get("save_total_limit") or 1)
    return limit + 1, (limit if t.get("keep_checkpoints", True) else 0)


def sweep_lines(cfg: DictConfig, job_cfgs: list[DictConfig], plans: list[Plan]) -> list[str]:
    """`make plan`'s report: each distinct job plan once (with how many jobs share it), then the sweep."""
    lines: list[str] = []
    groups = Counter("\n".join(plan_lines(c, p)) for c, p in zip(job_cfgs, plans, strict=True))
    for text, count in groups.items():
        lines.append(f"[plan] per job ({count} of {len(plans)} grid points):")
        lines += [f"[plan]   {line}" for line in text.splitlines()]
    n = len(plans)
    at_once = jobs_at_once(cfg, n)
    running, kept = checkpoints_held(cfg)
    biggest = max(p.checkpoint for p in plans)
    disk = (at_once * running + (n - at_once) * kept) * biggest
    tokens = [p.tokens for p in plans]
    tokens_per_s = cfg.get("plan", {}).get("tokens_per_s")
    if None in tokens:
        hours = "GPU-hours unknown (the training data cannot be read here: steps unknown)"
    elif not any(p.on_gpu for p in plans):
        hours = f"{sum(tokens):,} training tokens at most (CPU jobs: no GPU-hours)"
    elif tokens_per_s:
        training = sum(tokens) / float(tokens_per_s) / 3600
        overhead_s = float(cfg.get("plan", {}).get("job_overhead_s") or 0)
        fixed = sum(p.gpus for p in plans) * overhead_s / 3600  # every job's GPUs, busy or waiting, for that long
        hours = (f"{sum(tokens):,} training tokens at most -> {training + fixed:,.1f} GPU-hours: {training:,.1f} "
                 f"training at plan.tokens_per_s={tokens_per_s} per GPU + {fixed:,.1f} fixed ({n} jobs × "
                 f"plan.job_overhead_s={overhead_s:g} on their GPUs: load, broadcast, NCCL start, evaluation)")
    else:
        hours = (f"{sum(tokens):,} training tokens at most; GPU-hours: set plan.tokens_per_s=<training tokens/s "
                 "per GPU> (make bench-gpu measures it)")
    gpus = max(p.gpus for p in plans)
    lines.append(f"[plan] sweep: {n} grid points (refinement rounds add more), {at_once} at once"
                 f"{f' on {gpus * at_once} GPUs' if gpus else ''}; {hours}")
    lines.append(f"[plan] disk at peak: {disk / GB:.1f} GB of checkpoints ({at_once} running × {running} "
                 f"+ {n - at_once} ended × {kept}, {biggest / GB:.1f} GB each)")
    return lines
