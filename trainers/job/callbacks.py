"""Trainer callbacks that write the run directory's step logs at the Trainer's own cadence."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from trainers.runtime.run_dir import EVAL, METRICS, append_jsonl

_TRAIN_KEYS = {"loss": "loss", "m_theta": "m_theta", "learning_rate": "lr", "grad_norm": "grad_norm",
               "tokens_per_s": "tokens_per_s", "minor_coef": "minor_coef", "epoch": "epoch"}


class RunDirCallback(TrainerCallback):
    """metrics.jsonl gets a line per training log, eval.jsonl a line per evaluation."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            row = {"step": state.global_step}
            row.update({out: logs[key] for key, out in _TRAIN_KEYS.items() if key in logs})
            append_jsonl(self.run_dir / METRICS, row)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            append_jsonl(self.run_dir / EVAL, {
                "step": state.global_step,
                "accuracy": metrics["eval_accuracy"],
                "m_theta": metrics.get("eval_m_theta"),
                "n": metrics["eval_n"],
            })
