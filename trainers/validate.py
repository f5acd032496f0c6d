"""Checks of a job's config that a user can get wrong, run before anything heavy starts.

Each failure is one line that names the field and the fix. The sweep runs the same checks on
every grid point before it launches anything.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from trainers.losses import BETA_METHODS, LOSSES, ZERO_COEFFICIENT_METHODS


class ConfigError(ValueError):
    """A user-fixable config mistake; the message is one line naming the field and the fix."""


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def validate_config(cfg: DictConfig, world_size: int | None = None) -> None:
    """Raise ConfigError for the first invalid field of a job config (paths excluded: see validate_paths).

    `world_size` defaults to the processes the job's strategy asks for (nproc_per_node × nnodes).
    """
    if world_size is None:
        s = cfg.get("strategy")
        world_size = 1 if s is None else int(s.nproc_per_node) * int(s.nnodes)
    method = cfg.method.name
    if method not in LOSSES:
        raise ConfigError(
            f"method={method!r} is not a known method; use one of {', '.join(sorted(LOSSES))} "
            "(a new one is a function in trainers/losses.py LOSSES and a file in conf/method/)"
        )
    beta = cfg.method.get("beta")
    if method in ZERO_COEFFICIENT_METHODS:
        if not (_positive(beta) or beta == 0):
            raise ConfigError(f"method.beta={beta} is invalid for {method}: its coefficient λ must be >= 0 "
                              "(e.g. method.beta=0.1; 0 is raw SFT)")
    elif method in BETA_METHODS and not _positive(beta):
        raise ConfigError(f"method.beta={beta} is invalid for {method}: β must be > 0 (e.g. method.beta=0.1)")
    t = cfg.train
    if not _positive(t.lr):
        raise ConfigError(f"train.lr={t.lr} is invalid: the learning rate must be > 0 (e.g. train.lr=1e-4)")
    for field in ("global_batch_size", "per_device_batch_size", "eval_batch_size"):
        if not (isinstance(t[field], int) and t[field] > 0):
            raise ConfigError(f"train.{field}={t[field]} is invalid: it must be a positive integer")
    per_step = t.per_device_batch_size * world_size
    if t.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of train.per_device_batch_size "
            f"× processes ({t.per_device_batch_size} × {world_size} = {per_step}); change one of them "
            "(or strategy.nproc_per_node)"
        )
    if t.max_steps <= 0 and not _positive(t.epochs):
        raise ConfigError(f"train.epochs={t.epochs} with train.max_steps={t.max_steps}: set one of them > 0")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio={t.warmup_ratio} must be in [0, 1) (the paper uses 0.1)")
    if cfg.data.get("n_eval") is not None and cfg.data.n_eval <= 0:
        raise ConfigError(f"data.n_eval={cfg.data.n_eval} must be > 0 or null (all)")


def validate_paths(cfg: DictConfig) -> None:
    """The model directory must exist and look like a checkpoint (run after the embedded world is built)."""
    model_dir = Path(cfg.model.path)
    if not model_dir.is_dir():
        raise ConfigError(
            f"model.path={cfg.model.path} does not exist; point model.path at a local checkpoint directory "
            "(config.json, weights, tokenizer)"
        )
    if not (model_dir / "config.json").exists():
        raise ConfigError(f"model.path={cfg.model.path} has no config.json; is it a transformers checkpoint directory?")
