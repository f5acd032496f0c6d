"""The HF `Trainer` with a sequence-level SFT loss from the registry, as TRL does it.

Only the objective, its metrics and the multiple-choice evaluation are ours; accumulation,
mixed precision, accelerate/FSDP/DeepSpeed and checkpoint-resume stay the library's.

A training micro-batch makes no host sync of its own: the LM head runs at the answer positions
only (`trainers.model.logprobs`), a non-finite loss is remembered on the device and checked when the
Trainer logs (it syncs then anyway) and when training ends, and the input-token count comes from
the collator, which already knows it on the host.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer

from trainers.data.prompts import Sample
from trainers.data.selection import SELECT, split_accuracy
from trainers.model.logprobs import answer_logps
from trainers.model.losses import LOSSES, TokenLogps, m_theta, minor_coefficient
from trainers.model.scoring import Scores, prediction_rows, score_sharded
from trainers.runtime.methods import METHODS


class DivergedError(RuntimeError):
    """The loss became non-finite: the job stops and is recorded as "diverged"."""


class LossTrainer(Trainer):
    """`Trainer` whose loss is `LOSSES[method]` of policy and cached reference log-probs."""

    # Our loss is a per-micro-batch mean: let the Trainer divide it by the accumulation steps. transformers ≥ 5.19
    # reads this attribute; earlier releases divide only when `model_accepts_loss_kwargs` is False (set in __init__).
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
        eval_splits: Sequence[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # As TRL's trainers do: the model's forward takes **kwargs, so the Trainer would think the loss was normalised
        # by `num_items_in_batch` and (before 5.19) not divide it by the accumulation steps: 2x gradients at 2 steps.
        self.model_accepts_loss_kwargs = False
        self.loss_fn = LOSSES[method]
        self.method, self.beta = method, beta
        self.eval_samples, self.eval_ref_logps = eval_samples, eval_ref_logps
        self.letter_ids, self.pad_id = letter_ids, pad_id
        self.track_m_theta = track_m_theta
        self.eval_splits = eval_splits  # each eval question's split: mid-training selection accuracy
        self.select_samples = ([s for s, split in zip(eval_samples, eval_splits, strict=True) if split == SELECT]
                               if eval_splits else [])  # what `report_selection` scores, chosen once
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._throughput_clock: tuple[float, int] | None = None  # (time, tokens seen) at the last log
        self._unlogged_tokens = 0  # input tokens of this process's micro-batches since the last count
        self._first_bad_step: torch.Tensor | None = None  # on the device: first step with a non-finite loss, or -1
        self.last_eval: dict[str, Any] | None = None
        self.last_report: dict[str, Any] | None = None  # the last `report_selection`, as eval.jsonl has it

    def train(self, *args: Any, **kwargs: Any):
        self._throughput_clock = None  # set at the first step, after a resumed state is loaded
        self._unlogged_tokens, self._first_bad_step = 0, None
        output = super().train(*args, **kwargs)
        self._count_tokens()
        self._raise_if_diverged()
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy_logps, token_logps, answer_logits = answer_logps(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        )
        ref_logps, n_tokens = inputs["ref_logps"], inputs["n_tokens"]
        tokens = None
        if METHODS[self.method].reads_tokens:
            if METHODS[self.method].reads_reference_tokens and "ref_token_logps" not in inputs:
                raise ValueError(f"{self.method} needs the reference's per-token log-probs; none reached the batch")
            tokens = TokenLogps(policy=token_logps, sample=inputs["token_sample"], ref=inputs.get("ref_token_logps"))
        loss = self.loss_fn(policy_logps, ref_logps, n_tokens, self.beta, tokens=tokens).mean()
        if model.training:
            if self._throughput_clock is None:
                self._throughput_clock = (time.perf_counter(), int(self.state.num_input_tokens_seen))
            self._unlogged_tokens += int(inputs["n_input_tokens"])
            self._note_if_non_finite(loss)
        with torch.no_grad():
            if self.track_m_theta:
                self._metrics["m_theta"].append(m_theta(policy_logps, ref_logps, n_tokens).mean())
            if METHODS[self.method].logs_minor_coefficient:
                self._metrics["minor_coef"].append(minor_coefficient(policy_logps, ref_logps, self.beta).mean())
        return (loss, answer_logits) if return_outputs else loss

    def _note_if_non_finite(self, loss: torch.Tensor) -> None:
        """Remember (on the device, no sync) the first step whose loss was NaN or infinite."""
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        # the step as a Python scalar: no host-to-device copy per micro-batch
        self._first_bad_step = torch.where(bad & (self._first_bad_step < 0), self.state.global_step,
                                           self._first_bad_step)

    def _raise_if_diverged(self) -> None:
        """End the job as diverged if any process saw a non-finite loss; every process decides alike.

        Called at each training log line and at the end of training, where the Trainer syncs
        anyway; the check costs one more small reduction there, never one per micro-batch.
        """
        if self._first_bad_step is None and self.accelerator.num_processes == 1:
            return
        first = self._first_bad_step
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            # -1 means "none", so the largest value over processes is a bad step if any process saw one
            first = self.accelerator.gather(first.to(self.accelerator.device).reshape(1)).max()
        first_step = int(first)
        if first_step >= 0:
            raise DivergedError(f"non-finite loss at step {first_step + 1} (detected at step {self.state.global_step})")

    def _count_tokens(self) -> int:
        """Add this process's input tokens since the last count (summed over processes) to the Trainer state."""
        delta = self._unlogged_tokens
        if self.accelerator.num_processes > 1:
            delta = int(self.accelerator.reduce(torch.tensor(delta, device=self.accelerator.device), reduction="sum"))
        self._unlogged_tokens = 0
        self.state.num_input_tokens_seen += delta
        return delta

    def _save_checkpoint(self, model, trial):
        self._count_tokens()  # the saved state carries the exact count a resumed run continues from
        return super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the batch metrics gathered since the last log (and throughput) to training log lines."""
        if "loss" in logs:
            self._raise_if_diverged()
            self._count_tokens()
            logs["num_input_tokens_seen"] = int(self.state.num_input_tokens_seen)
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

    def report_selection(self) -> dict[str, Any] | None:
        """The selection split's accuracy now, from the prompts alone (no mθ, no report split): what a pruner or
        early stopping compares running jobs by, for a fraction of an evaluation. None without a split."""
        samples = self.select_samples
        if not samples:
            return None
        scores = score_sharded(self.model, samples, self.letter_ids, self.pad_id, self.args.per_device_eval_batch_size,
                               with_logps=False)
        rows = [{**row, "split": SELECT} for row in prediction_rows(samples, scores.preds)]  # as `evaluate` counts
        self.last_report = {"step": self.state.global_step, "select_accuracy": split_accuracy(rows, SELECT),
                            "select_n": len(samples)}
        return self.last_report

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Multiple-choice accuracy and eval m_theta from one forward pass per question.

        Without m_theta tracking only the prompts are read (the choice needs no answer tokens).
        A model that has already diverged is not scored: the job ends as diverged instead. With
        several processes each scores its shard of the questions and every rank gets them all back.
        """
        self._raise_if_diverged()
        start = time.perf_counter()
        scores: Scores = score_sharded(
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
        predictions = prediction_rows(self.eval_samples, scores.preds)
        if self.eval_splits is not None:  # what a pruner or early stopping compares runs by, while they train
            select = split_accuracy([{**p, "split": s} for p, s in zip(predictions, self.eval_splits, strict=True)],
                                    SELECT)
            if select is not None:
                metrics[f"{metric_key_prefix}_select_accuracy"] = select
                metrics[f"{metric_key_prefix}_select_n"] = sum(s == SELECT for s in self.eval_splits)
        self.last_eval = {"step": self.state.global_step, "metrics": metrics, "predictions": predictions}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
