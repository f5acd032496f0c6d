"""One training job = one (method, lr, β, seed) point, read top to bottom:

config → embedded world (if used) → tokenizer and data → model → base-model scores and
reference log-probs (cached, shared by every job) → Trainer with the method's loss → final
evaluation → run directory (DESIGN §3).

    python -m trainers.train method=minor_sft train.lr=2e-4 method.beta=0.1
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import PrinterCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from trainers.batching import TrainCollator
from trainers.callbacks import RunDirCallback
from trainers.console import hydra_mode, quiet_console, show_progress_bar
from trainers.distributed import broadcast_from_main, check_devices, is_main_process, launch, planned_world_size
from trainers.loss_trainer import DivergedError, LossTrainer
from trainers.mcq_data import DataError
from trainers.prepare import load_model, prepare, world_size
from trainers.run_dir import (
    EVAL,
    PREDICTIONS,
    RESULT,
    append_jsonl,
    atomic_write_json,
    config_hash,
    read_jsonl,
    reset_logs,
    write_jsonl,
)
from trainers.selection import REPORT, SELECT, mark_splits, split_accuracy, validate_split_config
from trainers.tracking import finish_wandb, run_name, start_wandb
from trainers.validate import ConfigError, validate_config

log = logging.getLogger("trainers.train")

# conf/ at the repo root, found the same way whether the app runs as `-m trainers.train` or is imported
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")



def compose_job(overrides: list[str]) -> DictConfig:
    """A job config as `python -m trainers.train <overrides>` would see it, for code that runs jobs in-process.

    Hydra's own node is registered as the running app's (paths read `${hydra:runtime.cwd}`) and,
    as in a real job, left out of the returned config.
    """
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def grad_accumulation(cfg: DictConfig, processes: int) -> int:
    """Accumulation steps that keep the global batch whatever the process count (1 × k ≡ k × 1)."""
    return cfg.train.global_batch_size // (cfg.train.per_device_batch_size * processes)


def fsdp_layer_classes(cfg: DictConfig) -> list[str]:
    """The wrap unit of FSDP: `strategy.fsdp.fsdp_config.transformer_layer_cls_to_wrap`, else the model's
    own `_no_split_modules` (its decoder layer, e.g. Qwen2DecoderLayer), read from its config.json."""
    named = cfg.strategy.fsdp.fsdp_config.get("transformer_layer_cls_to_wrap")
    if named:
        return [named] if isinstance(named, str) else list(named)
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    classes = [getattr(transformers, arch, None) for arch in config.architectures or []]
    layers = [name for c in classes if c is not None for name in (c._no_split_modules or [])]
    if not layers:
        raise ConfigError(f"model {cfg.model.name} names no decoder layer class; set "
                          "strategy.fsdp.fsdp_config.transformer_layer_cls_to_wrap=[<LayerClass>]")
    return layers


def strategy_arguments(cfg: DictConfig) -> dict[str, Any]:
    """FSDP / DeepSpeed settings of the strategy, in the shape TrainingArguments hands to accelerate."""
    s = cfg.get("strategy")
    if s is None:
        return {}
    if s.get("fsdp"):
        fsdp_config = OmegaConf.to_container(s.fsdp.fsdp_config, resolve=True)
        fsdp_config["transformer_layer_cls_to_wrap"] = fsdp_layer_classes(cfg)
        return {"fsdp": s.fsdp.fsdp, "fsdp_config": fsdp_config}
    if s.get("deepspeed"):
        return {"deepspeed": OmegaConf.to_container(s.deepspeed, resolve=True)}
    return {}


def training_arguments(cfg: DictConfig, run_dir: Path, report_to: list[str]) -> TrainingArguments:
    """The HF arguments for this job; gradient accumulation is derived from the global batch size.

    On a CPU `use_cpu` makes accelerate join the gloo process group (without it each rank trains alone).
    """
    t = cfg.train
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        run_name=run_name(cfg),
        seed=cfg.seed,
        learning_rate=t.lr,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=grad_accumulation(cfg, world_size()),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        optim=t.optim,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=t.bf16,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or None,
        save_total_limit=t.save_total_limit,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not show_progress_bar(cfg),
        include_num_input_tokens_seen="no",  # LossTrainer counts them from the collator, without a device sync
        report_to=report_to,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # every parameter takes part in every loss
        **strategy_arguments(cfg),
    )


def training_device() -> torch.device:
    """The device the Trainer will use (this process's GPU under torchrun/accelerate, else CPU)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def subject_accuracy(predictions: list[dict]) -> dict[str, float] | None:
    """Final accuracy per subject (FinEval, ceval-exam), or None when the data has no subjects."""
    by_subject: dict[str, list[bool]] = {}
    for p in predictions:
        if p.get("subject"):
            by_subject.setdefault(p["subject"], []).append(p["correct"])
    return {k: sum(v) / len(v) for k, v in sorted(by_subject.items())} or None


def late_m_theta(metrics_log: list[dict], fraction: float = 0.25) -> float | None:
    """Train mθ averaged over the last `fraction` of the logged steps: one batch is too noisy to compare
    methods by (analysis computes the same from metrics.jsonl)."""
    rows = [(r["step"], r["m_theta"]) for r in metrics_log if r.get("m_theta") is not None and "step" in r]
    if not rows:
        return None
    last = max(step for step, _ in rows)
    late = [m for step, m in rows if step >= last * (1 - fraction)]
    return sum(late) / len(late)


def job_identity(cfg: DictConfig) -> dict[str, Any]:
    """The grid coordinates and config hash that every result.json starts with, whatever its status."""
    return {
        "method": cfg.method.name,
        "lr": float(cfg.train.lr),
        "beta": cfg.method.get("beta"),
        "seed": int(cfg.seed),
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "group": cfg.experiment_name,
        "run_name": run_name(cfg),
        "config_hash": config_hash(cfg),
    }


def slurm_job_id() -> str | None:
    """The SLURM job this ran in, as sacct names it ("<array>_<task>" for array tasks), or None."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def resumable_checkpoint(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path) -> str | None:
    """The run directory's last checkpoint, if it was saved by this same config; else None.

    Checkpoints of another config (a changed grid point writing to the same directory) are
    removed: resuming from them would mix two experiments.
    """
    stamp, digest = run_dir / ".config_hash", config_hash(cfg)
    same_config = stamp.exists() and stamp.read_text().strip() == digest
    if checkpoint_dir.is_dir() and not same_config:
        shutil.rmtree(checkpoint_dir)
    stamp.write_text(digest)
    if not (cfg.train.resume and same_config and checkpoint_dir.is_dir()):
        return None
    return get_last_checkpoint(str(checkpoint_dir))


def shards_the_model(cfg: DictConfig) -> bool:
    """FSDP and ZeRO-3 shard the weights: the training model is loaded after TrainingArguments exist
    (ZeRO-3's zero.Init, FSDP's rank-0 loading), not reused from the scoring pass."""
    s = cfg.get("strategy")
    return bool(s is not None and (s.get("fsdp") or s.get("deepspeed")))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job, write its run directory, and return the result (also in result.json).

    On N processes (trainers.distributed) every rank runs this; rank 0 alone writes the run
    directory, W&B and result.json, and decides whether to resume.
    """
    started = time.perf_counter()
    main_process = is_main_process()
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    validate_config(cfg, world_size=world_size())
    validate_split_config(cfg.data)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    set_seed(cfg.seed)

    sharded = shards_the_model(cfg)
    prepared = prepare(cfg, device=training_device(), keep_model=not sharded)
    eval_samples, train_samples = prepared.eval_samples, prepared.train_samples
    base_accuracy = prepared.base_accuracy
    args = training_arguments(cfg, run_dir, [] if cfg.logger.name == "none" else ["wandb"])
    model = load_model(cfg) if sharded else prepared.model
    if cfg.model.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()

    resume_from = None
    if main_process:
        resume_from = resumable_checkpoint(cfg, run_dir, Path(args.output_dir))
        reset_logs(run_dir, int(Path(resume_from).name.split("-")[-1]) if resume_from else None)
        if not resume_from:
            append_jsonl(run_dir / EVAL, {"step": 0, "accuracy": base_accuracy, "m_theta": 0.0,
                                          "n": len(eval_samples)})
    resume_from = broadcast_from_main(resume_from)
    resumed_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else None

    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=list(zip(train_samples, prepared.ref_logps,
                               prepared.ref_token_logps or [None] * len(train_samples), strict=True)),
        eval_dataset=eval_samples,
        data_collator=TrainCollator(prepared.pad_id),
        processing_class=prepared.tokenizer,
        callbacks=[RunDirCallback(run_dir)],
        method=cfg.method.name,
        beta=cfg.method.get("beta"),
        eval_samples=eval_samples,
        eval_ref_logps=prepared.base.logps,
        letter_ids=prepared.letter_ids,
        pad_id=prepared.pad_id,
        track_m_theta=bool(cfg.train.track_m_theta),
    )
    if args.disable_tqdm:  # else the Trainer prints every log dict; they are in metrics.jsonl and W&B
        trainer.remove_callback(PrinterCallback)
    status, error = "ok", None
    wandb_run = start_wandb(cfg, run_dir) if main_process else None
    train_started = time.perf_counter()
    try:
        log.info("Training <%s> (max_steps=%s)", run_name(cfg), cfg.train.max_steps)
        trainer.train(resume_from_checkpoint=resume_from)
        train_s = time.perf_counter() - train_started
        if trainer.last_eval is None or trainer.last_eval["step"] != trainer.state.global_step:
            trainer.evaluate()
    except DivergedError as exc:
        status, error = "diverged", str(exc)
        train_s = time.perf_counter() - train_started
        log.warning("Diverged: %s", exc)
    finally:
        finish_wandb(wandb_run, exit_code=0 if status == "ok" else 1)

    metrics_log = read_jsonl(run_dir / "metrics.jsonl")
    final = trainer.last_eval if status == "ok" else None
    predictions = mark_splits(final["predictions"], cfg.data.get("select_fraction", 0.5),
                              cfg.data.get("select_seed", 0)) if final else []
    if final is not None and main_process:
        write_jsonl(run_dir / PREDICTIONS, predictions)
    wall_s = time.perf_counter() - started
    train_tokens = int(trainer.state.num_input_tokens_seen)
    result = {
        **job_identity(cfg),
        "status": status,
        "error": error,
        "accuracy": final["metrics"]["eval_accuracy"] if final else None,
        "m_theta": final["metrics"].get("eval_m_theta") if final else None,
        "select_accuracy": split_accuracy(predictions, SELECT),
        "report_accuracy": split_accuracy(predictions, REPORT),
        "train_m_theta": late_m_theta(metrics_log),
        "base_accuracy": base_accuracy,
        "eval_n": len(eval_samples),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "subject_accuracy": subject_accuracy(final["predictions"]) if final else None,
        "train_n": len(train_samples),
        "steps": int(trainer.state.global_step),
        "train_tokens": train_tokens,
        "wall_s": wall_s,
        "tokens_per_s": train_tokens / max(train_s, 1e-9),
        "train_s": train_s,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "resumed_from_step": resumed_step,
        "world_size": world_size(),
        "strategy": cfg.strategy.name if cfg.get("strategy") else "single",
        "per_device_batch_size": int(cfg.train.per_device_batch_size),
        "grad_accumulation": int(args.gradient_accumulation_steps),
        "effective_batch": int(cfg.train.per_device_batch_size) * world_size() * int(args.gradient_accumulation_steps),
        "tokenize_pass": prepared.tokenize_pass,
        "reference_pass": prepared.reference_pass,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "slurm_job_id": slurm_job_id(),
        "base_eval": prepared.base_pass,
    }
    if main_process:
        atomic_write_json(run_dir / RESULT, result)
    log.info("Result: %s accuracy=%s (base %.4f) m_theta=%s -> %s",
             status, result["accuracy"], base_accuracy, result["m_theta"], run_dir / RESULT)
    return result


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
        log.exception("Job failed")
        if is_main_process():  # another rank's failure ends the workers; the agent records it
            result = {
                **job_identity(cfg), "status": "failed",
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "accuracy": None, "m_theta": None,
            }
            atomic_write_json(Path(cfg.run_dir) / RESULT, result)
        raise


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final accuracy on the selection split (trainers.selection), the
    objective of an Optuna search: choices are made on that split, the report quotes the other.

    In a multirun (sweep) an input error is raised for the sweeper to report; on its own the
    job prints it in one line and exits with status 2.
    """
    distributed = planned_world_size(cfg) > 1 or shards_the_model(cfg)  # FSDP/ZeRO-3 need a process group
    try:
        check_devices(cfg)
        validate_config(cfg)
        multirun = hydra_mode() == RunMode.MULTIRUN
        if cfg.get("prepare_only"):  # the sweep's prepare job: on the same devices as its grid jobs
            with quiet_console(multirun):
                if distributed:
                    launch(cfg, quiet=multirun)
                else:
                    prepare(cfg, device=training_device(), reference=True)
            return None
        quiet = multirun and not show_progress_bar(cfg)
        with quiet_console(quiet):
            result = launch(cfg, quiet=quiet) if distributed else run_job(cfg)
    except (ConfigError, DataError) as exc:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    accuracy = "n/a" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
    print(
        f"{result['run_name']}: {result['status']}, base accuracy {result['base_accuracy']:.4f}, "
        f"final accuracy {accuracy}, eval m_theta {result['m_theta']}, {result['wall_s']:.1f} s -> {cfg.run_dir}",
        flush=True,
    )
    return result["select_accuracy"] if result.get("select_accuracy") is not None else result["accuracy"]


if __name__ == "__main__":
    main()
