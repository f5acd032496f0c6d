"""The result.json record of one job: who it is, how it ended, what it measured, where and how it ran.

Every record starts with the job's identity (grid coordinates and config hash), whatever its status,
so a sweep can tell which point a failed or diverged job was. Rank 0 writes it last and atomically
(`trainers.runtime.run_dir`); its fields are the run-directory contract that analysis/ reads.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from trainers.data.selection import REPORT, SELECT, split_accuracy
from trainers.runtime.process import world_size
from trainers.runtime.run_dir import FAILED, LATE_FRACTION, STOP_STATUSES, config_hash
from trainers.world.artifact import world_sha256

if TYPE_CHECKING:
    import torch


def run_name(cfg: DictConfig) -> str:
    """Human-readable grid coordinates: method, learning rate, β (if any), seed."""
    beta = cfg.method.get("beta")
    beta_part = f"-b{beta:g}" if beta is not None else ""
    return f"{cfg.method.name}-lr{cfg.train.lr:g}{beta_part}-s{cfg.seed}"


def job_identity(cfg: DictConfig) -> dict[str, Any]:
    """The grid coordinates and config hash that every result.json starts with, whatever its status."""
    return {
        "method": cfg.method.name,
        "lr": float(cfg.train.lr),
        "beta": cfg.method.get("beta"),
        "seed": int(cfg.seed),
        "dataset": cfg.data.name,
        "world_seed": cfg.data.get("world_seed"),  # the embedded world's seed; null for other data
        # the embedded world's content hash (trainers/world/artifact.py); null for other data
        "world_sha256": world_sha256(Path(cfg.data.path)) if cfg.data.get("world_seed") is not None else None,
        "model": cfg.model.name,
        "group": cfg.experiment_name,
        "run_name": run_name(cfg),
        "config_hash": config_hash(cfg),
    }


def failed_result(cfg: DictConfig, error: str, **extra: Any) -> dict[str, Any]:
    """The record of a job that ended without a result of its own (an exception, a killed worker)."""
    return {**job_identity(cfg), "status": FAILED, "error": error, "accuracy": None, "m_theta": None, **extra}


def slurm_job_id() -> str | None:
    """The SLURM job this ran in, as sacct names it ("<array>_<task>" for array tasks), or None."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def subject_accuracy(predictions: list[dict]) -> dict[str, float] | None:
    """Final accuracy per subject (FinEval, ceval-exam), or None when the data has no subjects."""
    by_subject: dict[str, list[bool]] = {}
    for p in predictions:
        if p.get("subject"):
            by_subject.setdefault(p["subject"], []).append(p["correct"])
    return {k: sum(v) / len(v) for k, v in sorted(by_subject.items())} or None


def late_m_theta(metrics_log: list[dict], fraction: float = LATE_FRACTION) -> float | None:
    """Train mθ averaged over the last `fraction` of the logged steps: one batch is too noisy to compare
    methods by (analysis computes the same from metrics.jsonl)."""
    rows = [(r["step"], r["m_theta"]) for r in metrics_log if r.get("m_theta") is not None and "step" in r]
    if not rows:
        return None
    last = max(step for step, _ in rows)
    late = [m for step, m in rows if step >= last * (1 - fraction)]
    return sum(late) / len(late)


@dataclass
class Fit:
    """How training ended: "ok", "diverged" (with its message), or "stopped"/"pruned" on a sweeper's request
    (with its reason), and the seconds spent in it."""

    status: str
    error: str | None
    train_s: float
    stop_reason: str | None = None


def last_intermediate(trainer: Any) -> dict[str, Any] | None:
    """The last evaluation or selection report during training, as eval.jsonl has it: what a stopped run got to."""
    last, report = trainer.last_eval, getattr(trainer, "last_report", None)
    if report is not None and (last is None or report["step"] > last["step"]):
        return {"step": report["step"], "accuracy": None, "select_accuracy": report["select_accuracy"],
                "m_theta": None}
    if last is None:
        return None
    metrics = last["metrics"]
    return {"step": last["step"], "accuracy": metrics.get("eval_accuracy"),
            "select_accuracy": metrics.get("eval_select_accuracy"), "m_theta": metrics.get("eval_m_theta")}


def training_result(
    cfg: DictConfig, fit: Fit, final: dict[str, Any] | None, predictions: list[dict], metrics_log: list[dict],
    prepared: Any, trainer: Any, model: torch.nn.Module, wall_s: float, resumed_step: int | None,
) -> dict[str, Any]:
    """The record of a job that trained: its accuracies on both splits, mθ, sizes, throughput and provenance.

    `final` is the trainer's last evaluation (None when the job diverged or was stopped); `predictions` its rows with
    their split marked; `prepared` the job's `Prepared` inputs; `trainer` the `LossTrainer` after fit and
    `model` the model it was given.
    """
    import torch  # loaded by the training that came before; module level would load it into the sweeper (failed_result)

    state = trainer.state
    per_device, accumulation = int(cfg.train.per_device_batch_size), int(trainer.args.gradient_accumulation_steps)
    train_tokens = int(state.num_input_tokens_seen)
    return {
        **job_identity(cfg),
        "status": fit.status,
        "error": fit.error,
        "accuracy": final["metrics"]["eval_accuracy"] if final else None,
        "m_theta": final["metrics"].get("eval_m_theta") if final else None,
        "select_accuracy": split_accuracy(predictions, SELECT),
        "report_accuracy": split_accuracy(predictions, REPORT),
        "train_m_theta": late_m_theta(metrics_log),
        "base_accuracy": prepared.base_accuracy,
        "stop_reason": fit.stop_reason,
        "last_eval": last_intermediate(trainer) if fit.status in STOP_STATUSES else None,
        "eval_n": len(prepared.eval_samples),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "subject_accuracy": subject_accuracy(final["predictions"]) if final else None,
        "subject_info": prepared.subject_info,
        "data_warnings": prepared.data_warnings,  # rows the data loader rejected, and why: the report's notes
        "train_n": len(prepared.train_samples),
        "steps": int(state.global_step),
        "train_tokens": train_tokens,
        "wall_s": wall_s,
        "tokens_per_s": train_tokens / max(fit.train_s, 1e-9),
        "train_s": fit.train_s,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "resumed_from_step": resumed_step,
        "world_size": world_size(),
        "strategy": cfg.strategy.name if cfg.get("strategy") else "single",
        "per_device_batch_size": per_device,
        "grad_accumulation": accumulation,
        "effective_batch": per_device * world_size() * accumulation,
        "tokenize_pass": prepared.tokenize_pass,
        "reference_pass": prepared.reference_pass,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "slurm_job_id": slurm_job_id(),
        "base_eval": prepared.base_pass,
        **(prepared.fingerprints or {}),  # data_fingerprint, tokenizer_fingerprint, model_fingerprint
    }
