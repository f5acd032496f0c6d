"""W&B run set-up for one job; metrics then flow through transformers' own WandbCallback.

We open the run ourselves, so that its name, group, job type and tags follow the grid
coordinates; the Trainer's callback finds `wandb.run` already open and logs into it. Offline
unless the user says otherwise (`WANDB_MODE=online` or `logger.mode=online`): a job never
waits on the network. Keys come only from the environment or `wandb login`, never from config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_name(cfg: DictConfig) -> str:
    """Human-readable grid coordinates: method, learning rate, β (if any), seed."""
    beta = cfg.method.get("beta")
    beta_part = f"-b{beta:g}" if beta is not None else ""
    return f"{cfg.method.name}-lr{cfg.train.lr:g}{beta_part}-s{cfg.seed}"


def start_wandb(cfg: DictConfig, run_dir: Path) -> Any | None:
    """Open the job's W&B run (None when logger=none)."""
    if cfg.logger.name == "none":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = os.environ.get("WANDB_MODE", cfg.logger.mode)
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT", cfg.logger.project),
        entity=cfg.logger.get("entity"),
        name=run_name(cfg),
        group=cfg.experiment_name,
        job_type=cfg.method.name,
        tags=[cfg.method.name, cfg.data.name, cfg.model.name],
        config=OmegaConf.to_container(cfg, resolve=True),
        dir=str(run_dir),
        mode=mode,
        reinit="finish_previous",
    )


def finish_wandb(run: Any | None, exit_code: int = 0) -> None:
    if run is not None:
        run.finish(exit_code=exit_code)
