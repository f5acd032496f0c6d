"""W&B run set-up for one job, where a W&B failure costs tracking, never the job's result.

We open the run ourselves, so that its name, group, job type and tags follow the grid
coordinates; `WandbTracking` (transformers' own W&B callback) logs the Trainer's metrics into it. Offline
unless the user says otherwise (`WANDB_MODE=online` or `logger.mode=online`): a job never
waits on the network. Keys come only from the environment or `wandb login`, never from config.

W&B runs a service process of its own (wandb-core). When anything of W&B fails (that service killed, a
connection reset, a full disk under its files), the job logs one warning and goes on without tracking; its
result stands. W&B's state in this process is torn down then, so the next job of the same runner starts a
fresh service (or, if that fails too, runs untracked with its own warning).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers.integrations import WandbCallback

from trainers.job.result import run_name

log = logging.getLogger(__name__)

_lost = False  # W&B failed during the open run: nothing more is sent to it, not even its finish


class _LostServiceNoise(logging.Filter):
    """asyncio's "socket.send() raised exception." once per message W&B's client still sends to its dead
    service: dozens of lines before our one warning says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("socket.send() raised exception")


logging.getLogger("asyncio").addFilter(_LostServiceNoise())


def tracking_failed(what: str, exc: BaseException) -> None:
    """One warning; then W&B's state in this process is dropped, so that the next job starts afresh."""
    global _lost
    _lost = True
    first = (str(exc).strip().splitlines() or [""])[0]
    log.warning("W&B failed at %s (%s%s); this job goes on without tracking, its result is unaffected",
                what, type(exc).__name__, f": {first}" if first else "")
    try:
        import wandb

        wandb.teardown()  # forgets the dead service; a later wandb.init starts a new one
    except (Exception, SystemExit):  # teardown of a dead service can fail too; the singleton is gone either way
        pass


def start_wandb(cfg: DictConfig, run_dir: Path) -> Any | None:
    """Open the job's W&B run (None when logger=none, or when W&B cannot start: a warning, no tracking)."""
    global _lost
    if cfg.logger.name == "none":
        return None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        mode = os.environ.get("WANDB_MODE", cfg.logger.mode)
        run = wandb.init(
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
    except Exception as exc:
        tracking_failed("wandb.init", exc)
        return None
    _lost = False
    return run


def finish_wandb(run: Any | None, exit_code: int = 0) -> None:
    """Close the run; nothing to close after a W&B failure (its service is gone), and a failure here is a warning."""
    if run is None or _lost:
        return
    try:
        run.finish(exit_code=exit_code)
    except Exception as exc:
        tracking_failed("run.finish", exc)


def _guarded(event: str) -> Any:
    def call(self: WandbTracking, *args: Any, **kwargs: Any) -> Any:
        if self._wandb is None or _lost:
            return None
        try:
            return getattr(WandbCallback, event)(self, *args, **kwargs)
        except Exception as exc:
            self._wandb, self._initialized = None, False
            tracking_failed(event, exc)
            return None

    call.__name__ = event
    return call


class WandbTracking(WandbCallback):
    """transformers' W&B callback on the run `start_wandb` opened, where a failure of W&B ends tracking (one
    warning), never training: the Trainer would otherwise raise it from its `on_log` and lose the job."""

    on_train_begin = _guarded("on_train_begin")
    on_train_end = _guarded("on_train_end")
    on_log = _guarded("on_log")
    on_save = _guarded("on_save")
    on_predict = _guarded("on_predict")
