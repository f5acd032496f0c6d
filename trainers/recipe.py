"""One training job = one (method, lr, β, seed) point, read top to bottom:

    set up (checks, threads, seed) → prepare (embedded world, tokenizer and data, base-model scores,
    reference log-probs: cached, shared by every job) → training model → start or resume → Trainer
    with the method's loss → fit and evaluate → predictions and result.json → the model exported
    (`train.save_model`), the checkpoints deleted (an ok end: they served resume only)

The run directory it writes is the contract of docs/architecture.md. `python -m trainers.train` (the entry,
trainers/train.py) runs it in-process, in a sweep's job runner, or on every rank of `trainers.worker`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import PrinterCallback, TrainingArguments, set_seed

from trainers.data.batching import TrainCollator
from trainers.data.mcq import DataError
from trainers.data.selection import assign_split, mark_splits, split_setting
from trainers.job.arguments import shards_the_model, training_arguments
from trainers.job.callbacks import ReportSelection, RunDirCallback, SaveOnRequest, StopOnRequest, mark_started
from trainers.job.checkpoints import checkpoint_step, remove_checkpoints, start_or_resume
from trainers.job.export import export_model
from trainers.job.plan import gradient_checkpointing, job_periodic_save_min
from trainers.job.prepare import Prepared, load_model, prepare
from trainers.job.result import Fit, failed_result, run_name, training_result
from trainers.job.tracking import WandbTracking, finish_wandb, start_wandb
from trainers.job.validate import validate_config
from trainers.model.loss_trainer import DivergedError, LossTrainer
from trainers.runtime.collectives import training_device
from trainers.runtime.disk import no_space
from trainers.runtime.errors import ConfigError
from trainers.runtime.process import is_main_process, world_size
from trainers.runtime.run_dir import (
    DIVERGED,
    METRICS,
    OK,
    PREDICTIONS,
    RESULT,
    RunStatus,
    atomic_write_json,
    read_jsonl,
    write_jsonl,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job, write its run directory, and return the result (also in result.json).

    On N processes (`trainers.worker`) every rank runs this; rank 0 alone writes the run
    directory, W&B and result.json, and decides whether to resume.
    """
    started = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        mark_started(cfg, run_dir)
    set_up(cfg)
    prepared = prepare(cfg, device=training_device(), keep_model=not shards_the_model(cfg))
    # decided before TrainingArguments exist: under ZeRO-3 they make every model built afterwards a partitioned
    # one, the plan's empty (meta) model too, which DeepSpeed cannot partition
    checkpointing = gradient_checkpointing(cfg)
    args = training_arguments(cfg, run_dir)
    model = training_model(cfg, prepared, checkpointing)
    resume_from = start_or_resume(cfg, run_dir, Path(args.output_dir), prepared.base_accuracy,
                                  len(prepared.eval_samples))
    trainer = build_trainer(cfg, args, model, prepared, run_dir)
    fit = fit_and_evaluate(cfg, trainer, run_dir, resume_from)
    final = trainer.last_eval if fit.status == OK else None
    predictions = final_predictions(cfg, run_dir, final)
    if fit.status == OK and cfg.train.get("save_model"):
        export_model(trainer, run_dir, cfg.train.save_model)
    result = training_result(cfg, fit, final, predictions, read_jsonl(run_dir / METRICS), prepared, trainer, model,
                             wall_s=time.perf_counter() - started, resumed_step=checkpoint_step(resume_from))
    if is_main_process():
        atomic_write_json(run_dir / RESULT, result)
        if RunStatus(fit.status).is_final:  # a rerun skips it: nothing will resume from its checkpoints
            remove_checkpoints(cfg, Path(args.output_dir))
    log.info("Result: %s accuracy=%s (base %.4f) m_theta=%s -> %s",
             fit.status, result["accuracy"], prepared.base_accuracy, result["m_theta"], run_dir / RESULT)
    return result


def set_up(cfg: DictConfig) -> None:
    """Refuse bad input before anything heavy starts, then fix the thread count and the seeds."""
    validate_config(cfg, processes=world_size())
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    set_seed(cfg.seed)


def training_model(cfg: DictConfig, prepared: Prepared, checkpointing: bool) -> torch.nn.Module:
    """The scoring pass's model; under FSDP/ZeRO-3 a fresh load, now that TrainingArguments set up sharding.
    `checkpointing`: `gradient_checkpointing(cfg)`, the user's setting, else on only where the plan needs it."""
    model = load_model(cfg, sharded=True) if shards_the_model(cfg) else prepared.model
    if checkpointing:
        model.gradient_checkpointing_enable()
        if cfg.model.get("lora"):
            model.enable_input_require_grads()  # frozen embeddings: checkpointed layers need inputs with grad
    return model


def build_trainer(cfg: DictConfig, args: TrainingArguments, model: torch.nn.Module, prepared: Prepared,
                  run_dir: Path) -> LossTrainer:
    """The HF Trainer with the method's loss over (sample, reference log-prob[, per-token]) rows."""
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=list(zip(prepared.train_samples, prepared.ref_logps,
                               prepared.ref_token_logps or [None] * len(prepared.train_samples), strict=True)),
        eval_dataset=prepared.eval_samples,
        data_collator=TrainCollator(prepared.pad_id),
        processing_class=prepared.tokenizer,
        callbacks=[RunDirCallback(run_dir), StopOnRequest(run_dir),
                   SaveOnRequest(run_dir, job_periodic_save_min(cfg))],
        method=cfg.method.name,
        beta=cfg.method.get("beta"),
        eval_samples=prepared.eval_samples,
        eval_ref_logps=prepared.base.logps,
        letter_ids=prepared.letter_ids,
        pad_id=prepared.pad_id,
        track_m_theta=bool(cfg.train.track_m_theta),
        eval_splits=[assign_split(s.id, *split_setting(cfg.data)) for s in prepared.eval_samples],
    )
    trainer.add_callback(ReportSelection(run_dir, cfg.train.get("report_steps") or 0, trainer.report_selection))
    if args.disable_tqdm:  # else the Trainer prints every log dict; they are in metrics.jsonl and W&B
        trainer.remove_callback(PrinterCallback)
    return trainer


def fit_and_evaluate(cfg: DictConfig, trainer: LossTrainer, run_dir: Path, resume_from: str | None) -> Fit:
    """Train (from `resume_from` if set), then evaluate at the last step unless that just happened.

    A non-finite loss ends the job as "diverged", a sweeper's stop request as "stopped" or "pruned"
    (without a final evaluation: it never scores a length it did not train); the W&B run is closed
    whatever happens, and a W&B failure is a warning (trainers.job.tracking), never the job's.
    """
    wandb_run = start_wandb(cfg, run_dir) if is_main_process() else None
    if wandb_run is not None:  # a W&B failure from here on is a warning, never the job's end
        trainer.add_callback(WandbTracking())
    started, status, error, stop = time.perf_counter(), OK, None, None
    try:
        log.info("Training <%s> (max_steps=%s)", run_name(cfg), cfg.train.max_steps)
        trainer.train(resume_from_checkpoint=resume_from)
        train_s = time.perf_counter() - started
        stop = next((c.request for c in trainer.callback_handler.callbacks if isinstance(c, StopOnRequest)), None)
        if stop:
            status = stop["status"]
            log.info("%s at step %s: %s", status.capitalize(), stop["step"], stop.get("reason"))
        elif trainer.last_eval is None or trainer.last_eval["step"] != trainer.state.global_step:
            trainer.evaluate()
    except DivergedError as exc:
        status, error = DIVERGED, str(exc)
        train_s = time.perf_counter() - started
        log.warning("Diverged: %s", exc)
    finally:
        finish_wandb(wandb_run, exit_code=1 if status == DIVERGED else 0)
    return Fit(status, error, train_s, stop_reason=stop.get("reason") if stop else None)


def final_predictions(cfg: DictConfig, run_dir: Path, final: dict[str, Any] | None) -> list[dict]:
    """The final evaluation's rows with their select/report split marked; rank 0 writes predictions.jsonl."""
    if final is None:
        return []
    predictions = mark_splits(final["predictions"], *split_setting(cfg.data))
    if is_main_process():
        write_jsonl(run_dir / PREDICTIONS, predictions)
    return predictions


def prepare_caches(cfg: DictConfig) -> None:
    """The sweep's prepare job: tokenized data, base-model scores and reference log-probs, into the cache (the
    model is not kept: a sharded strategy's scoring then casts it in place instead of copying it)."""
    prepare(cfg, device=training_device(), reference=True, keep_model=False)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """`train` with failures recorded: an unexpected error leaves result.json with status "failed".

    Input errors (ConfigError, DataError) are raised as they are: they are the user's to fix,
    and no run has started.
    """
    try:
        return train(cfg)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        if no_space(exc):  # no job's fault, and the same for every job: the sweeper says it once
            log.error("Job failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            log.exception("Job failed")
        if is_main_process():  # another rank's failure ends the workers; the agent records it
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            atomic_write_json(Path(cfg.run_dir) / RESULT, failed_result(cfg, error))
        raise
