"""Rows 1-3: the real `LossTrainer` step against MinorSFT's variants and a bare PyTorch loop.

Every variant trains its own copy of the same initial model on the same batches (the first
`steps` x batch rows of the train set, in order). A Trainer variant is timed from one optimizer
step's end to the next (`on_step_end`), so its time covers everything the loop does per step:
fetching and collating the batch, forward, backward, gradient clipping, AdamW, the scheduler,
token counting and the periodic log line. The first step of each run (optimizer state
allocation, first-touch of buffers) is left out, for the bare loop too.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from bench.setup import BenchData, fresh_copy
from bench.timing import interleave, median_time, ratio_summary
from trainers.data.batching import TrainCollator, collate
from trainers.data.prompts import Sample
from trainers.job.arguments import training_arguments
from trainers.job.callbacks import RunDirCallback
from trainers.model.loss_trainer import LossTrainer
from trainers.model.losses import LOSSES, sequence_logps
from trainers.model.scoring import score_samples

BETA = 0.1  # the conf default; a step's cost does not depend on it (sft ignores it)


class StepClock(TrainerCallback):
    """Marks the end of every optimizer step; the gaps are whole loop periods."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    def periods(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


class LiveReferenceTrainer(LossTrainer):
    """The default of TRL's DPOTrainer and LLaMA-Factory: a frozen copy of the initial model scores
    every batch again (no-grad forward) instead of reading cached reference log-probs."""

    def __init__(self, *args: Any, ref_model: PreTrainedModel, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ref_model = ref_model.eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with torch.no_grad():
            logits = self.ref_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            ref_logps = sequence_logps(logits, inputs["labels"])
        return super().compute_loss(model, {**inputs, "ref_logps": ref_logps}, return_outputs, num_items_in_batch)


def sequential_arguments(cfg: Any, run_dir: Path) -> TrainingArguments:
    """The job's own `TrainingArguments`, with the same batches in the same order for every variant."""
    args = training_arguments(cfg, run_dir)
    args.train_sampling_strategy = "sequential"
    return args


def loss_trainer(
    cls: type[LossTrainer], model: PreTrainedModel, data: Any, rows: list[tuple[Sample, float]], method: str,
    run_dir: Path, callbacks: Sequence[TrainerCallback] = (), **extra: Any,
) -> LossTrainer:
    """A `LossTrainer` (or subclass) over `rows`, exactly as a job builds it; `data` gives the job config,
    tokenizer, pad id, letters and eval samples (a `BenchData`, or bench/peer.py's `PeerSetup`)."""
    trainer = cls(
        model=model, args=sequential_arguments(data.cfg, run_dir), train_dataset=rows,
        data_collator=TrainCollator(data.pad_id), processing_class=data.tokenizer, callbacks=list(callbacks),
        method=method, beta=BETA,
        eval_samples=data.eval_samples[:1], eval_ref_logps=torch.zeros(1), letter_ids=data.letters,
        pad_id=data.pad_id, track_m_theta=bool(data.cfg.train.track_m_theta), **extra,
    )
    trainer.remove_callback(PrinterCallback)  # keeps the bench's output readable; a print per log is noise
    return trainer


def first_batches(data: Any, steps: int) -> list[Sample]:
    """The first `steps` batches of the train set, in order (every variant trains on these)."""
    batch_size = int(data.cfg.train.per_device_batch_size)
    samples = data.train_samples[: steps * batch_size]
    if len(samples) < steps * batch_size:
        raise ValueError(f"{steps} steps of {batch_size} need {steps * batch_size} train samples, have {len(samples)}")
    return samples


def _trainer_run(
    cls: type[LossTrainer], model: PreTrainedModel, data: BenchData, rows: list[tuple[Sample, float]],
    method: str, run_dir: Path, **extra: Any,
) -> Callable[[], list[float]]:
    """One timed `trainer.train()` over `rows`; a fresh Trainer per call, exactly as a job builds it."""

    def run() -> list[float]:
        clock = StepClock()
        loss_trainer(cls, model, data, rows, method, run_dir, [RunDirCallback(run_dir), clock], **extra).train()
        return clock.periods()

    return run


def _bare_run(model: PreTrainedModel, data: BenchData, samples: Sequence[Sample]) -> Callable[[], list[float]]:
    """Collate, forward, raw SFT loss, backward, AdamW step, zero_grad: nothing else."""
    t = data.cfg.train
    batch_size = int(t.per_device_batch_size)

    def run() -> list[float]:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
        times = []
        for start in range(0, len(samples), batch_size):
            began = time.perf_counter()
            batch = collate(samples[start : start + batch_size], data.pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = LOSSES["sft"](sequence_logps(logits, batch["labels"]), None, batch["n_tokens"], None).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - began)
        return times[1:]

    return run


def measure_steps(model: PreTrainedModel, data: BenchData, steps: int, reps: int) -> dict[str, Any]:
    """Rows 1-3 for one model: interleaved runs of sft, minor_sft (cached / live reference) and the bare loop."""
    batch_size = int(data.cfg.train.per_device_batch_size)
    samples = first_batches(data, steps)
    ref = score_samples(model, samples, data.letters, data.pad_id, int(data.cfg.train.eval_batch_size))
    rows = list(zip(samples, ref.logps.tolist(), strict=True))
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        run_dir = Path(tmp)
        variants = {
            "sft": _trainer_run(LossTrainer, fresh_copy(model), data, rows, "sft", run_dir),
            "minor_sft_cached": _trainer_run(LossTrainer, fresh_copy(model), data, rows, "minor_sft", run_dir),
            "minor_sft_live": _trainer_run(
                LiveReferenceTrainer, fresh_copy(model), data, rows, "minor_sft", run_dir, ref_model=fresh_copy(model)
            ),
            "bare_loop": _bare_run(fresh_copy(model), data, samples),
        }
        timings = interleave(variants, reps)
    return {
        "batch_size": batch_size,
        "steps_per_run": steps,
        "reps": reps,
        "median_step_s": {name: median_time(t) for name, t in timings.items()},
        "ratios": {
            "minor_cached_over_sft": ratio_summary(timings["minor_sft_cached"], timings["sft"]),
            "minor_live_over_sft": ratio_summary(timings["minor_sft_live"], timings["sft"]),
            "trainer_over_bare": ratio_summary(timings["sft"], timings["bare_loop"]),
        },
    }

