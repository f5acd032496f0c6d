"""The HF `Trainer` with a sequence-level SFT loss from the registry, as TRL does it.

Only the objective, its metrics and the multiple-choice evaluation are ours; accumulation,
mixed precision, accelerate/FSDP/DeepSpeed and checkpoint-resume stay the library's.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer

from trainers.evaluate import Scores, prediction_rows, score_samples
from trainers.losses import BETA_METHODS, LOSSES, m_theta, minor_coefficient, sequence_logps
from trainers.prompts import Sample


class DivergedError(RuntimeError):
    """The loss became non-finite: the job stops and is recorded as "diverged"."""


class LossTrainer(Trainer):
    """`Trainer` whose loss is `LOSSES[method]` of policy and cached reference log-probs."""

    # Our loss is a per-micro-batch mean: let the Trainer divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        method: str,
        beta: float | None,
        eval_samples: Sequence[Sample],
        eval_ref_logps: torch.Tensor,
        letter_ids: Sequence[int],
        pad_id: int,
        track_m_theta: bool,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.loss_fn = LOSSES[method]
        self.method, self.beta = method, beta
        self.eval_samples, self.eval_ref_logps = eval_samples, eval_ref_logps
        self.letter_ids, self.pad_id = letter_ids, pad_id
        self.track_m_theta = track_m_theta
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._throughput_clock: tuple[float, int] | None = None  # (time, tokens seen) at the last log
        self.last_eval: dict[str, Any] | None = None

    def train(self, *args: Any, **kwargs: Any):
        self._throughput_clock = None  # set at the first step, after a resumed state is loaded
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        policy_logps = sequence_logps(logits, inputs["labels"])
        ref_logps, n_tokens = inputs["ref_logps"], inputs["n_tokens"]
        loss = self.loss_fn(policy_logps, ref_logps, n_tokens, self.beta).mean()
        if self._throughput_clock is None and model.training:
            self._throughput_clock = (time.perf_counter(), int(self.state.num_input_tokens_seen))
        if not torch.isfinite(loss):
            raise DivergedError(f"non-finite loss {loss.item()} at step {self.state.global_step}")
        with torch.no_grad():
            if self.track_m_theta:
                self._metrics["m_theta"].append(m_theta(policy_logps, ref_logps, n_tokens).mean())
            if self.method in BETA_METHODS:
                self._metrics["minor_coef"].append(minor_coefficient(policy_logps, ref_logps, self.beta).mean())
        return (loss, logits) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the batch metrics gathered since the last log (and throughput) to training log lines."""
        if "loss" in logs:
            for name, values in self._metrics.items():
                if values:
                    logs[name] = self._mean_across_processes(torch.stack(values).mean())
            now, seen = time.perf_counter(), int(self.state.num_input_tokens_seen)
            if self._throughput_clock is not None:
                then, seen_then = self._throughput_clock
                logs["tokens_per_s"] = (seen - seen_then) / max(now - then, 1e-9)
            self._metrics.clear()
            self._throughput_clock = (now, seen)
        super().log(logs, start_time)

    def _mean_across_processes(self, value: torch.Tensor) -> float:
        """One sync per log line, not per step."""
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(value.to(self.accelerator.device), reduction="mean")
        return float(value)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Multiple-choice accuracy and eval m_theta from one forward pass per question.

        Without m_theta tracking only the prompts are read (the choice needs no answer tokens).
        """
        start = time.perf_counter()
        scores: Scores = score_samples(
            self.model, self.eval_samples, self.letter_ids, self.pad_id, self.args.per_device_eval_batch_size,
            with_logps=self.track_m_theta,
        )
        n_tokens = torch.tensor([s.n_tokens for s in self.eval_samples], dtype=torch.float32)
        metrics = {
            f"{metric_key_prefix}_accuracy": scores.accuracy(self.eval_samples),
            f"{metric_key_prefix}_n": len(self.eval_samples),
            f"{metric_key_prefix}_runtime": time.perf_counter() - start,
        }
        if self.track_m_theta:
            metrics[f"{metric_key_prefix}_m_theta"] = float(m_theta(scores.logps, self.eval_ref_logps, n_tokens).mean())
        self.last_eval = {
            "step": self.state.global_step,
            "metrics": metrics,
            "predictions": prediction_rows(self.eval_samples, scores.preds),
        }
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
