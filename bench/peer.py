"""Rows 10-14: our training step against TRL's `SFTTrainer`, the trainer a user would run instead; Trainer
against Trainer, on the same model, batches, threads and arguments.

TRL runs with `loss_type="nll"` (its default: a fused LM head that projects only the labelled positions)
or `"dft"`; ours is the job's `LossTrainer` (`sft`, `minor_sft` reading cached reference log-probs, `dft`).
What makes the work equal:

- the same initial weights (a copy each), the same batches in the same order (a sequential sampler), the
  same answer-only labels (prompt and padding -100: TRL keeps a dataset's own `labels` column, which is
  what its `completion_only_loss` builds from a prompt-completion dataset);
- the same `TrainingArguments`: TRL's `SFTConfig` is built from every field of the job's own
  (`trainers.job.arguments.training_arguments`), which changes four of TRL's defaults — gradient
  checkpointing (TRL: on; the job: off), bf16 (TRL: on; the job's, off on a CPU), the learning rate
  (2e-5; the job's) and `logging_steps` (10; the job's). `max_length=None`: the rows are tokenized already;
- TRL's own per-step metrics (entropy and token accuracy from its fused head) stay on: its default.

The first step's loss is checked on both sides before anything is timed. The two normalise differently:
ours is the paper's per-answer mean, -lp/m averaged over the batch; TRL's is the sum over every answer
token ÷ their count. They coincide when every answer has the same number of tokens (the 151,936-token
rows: 6 each); otherwise TRL's first logged loss is compared with the token-weighted mean of our own
answer log-probs on the same batch and weights (`expected_first_losses`).

On the tiny and medium models the variants alternate in this process (`bench.timing.interleave`); on the
151,936-token model each (variant, repetition) runs in a process of its own, so that its peak resident
memory (`ru_maxrss`; on a GPU `torch.cuda.max_memory_allocated`) is its own, as rows 7 and 9 do.

    python -m bench.peer                               # the 151,936-token rows alone
    python -m bench.peer --child trl_nll --threads 2   # one process's measurement, JSON on stdout
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from bench.steps import StepClock, first_batches, loss_trainer, sequential_arguments
from bench.timing import interleave, median_time, per_rep_summary, ratio_summary
from bench.vocab import SMOKE_SHAPE, VocabShape, build_batch, build_model
from trainers.data.batching import collate
from trainers.data.prompts import Sample
from trainers.job.config import compose_job
from trainers.model.loss_trainer import LossTrainer
from trainers.model.losses import LOSSES, TokenLogps
from trainers.model.scoring import score_samples

# variant -> (trainer, loss): ours are LossTrainer methods, TRL's are SFTConfig.loss_type values
VARIANTS: dict[str, tuple[str, str]] = {
    "ours_sft": ("ours", "sft"), "ours_minor_sft": ("ours", "minor_sft"), "trl_nll": ("trl", "nll"),
    "ours_dft": ("ours", "dft"), "trl_dft": ("trl", "dft"),
}
# (numerator, denominator) of each ratio the rows report
PAIRS = {"sft_over_trl_nll": ("ours_sft", "trl_nll"), "minor_sft_over_trl_nll": ("ours_minor_sft", "trl_nll"),
         "dft_over_trl_dft": ("ours_dft", "trl_dft")}
BETA = 0.1  # minor_sft's β: a step's cost does not depend on it


@dataclass
class PeerSetup:
    """What both trainers train on: the job config, the batches' samples (in order), and what ours needs."""

    cfg: Any  # the job's DictConfig
    tokenizer: Any
    pad_id: int
    letters: list[int]
    samples: list[Sample]  # steps × batch rows, in training order
    eval_samples: list[Sample]  # LossTrainer's multiple-choice eval set (unused: eval_steps=0)


def trl_arguments(ours: TrainingArguments, loss_type: str) -> Any:
    """TRL's `SFTConfig` with every `TrainingArguments` field of the job's own arguments (see the docstring)."""
    from trl import SFTConfig

    same = {f.name: getattr(ours, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return SFTConfig(**same, loss_type=loss_type, max_length=None)


def answer_only_dataset(samples: Sequence[Sample]) -> Any:
    """The rows TRL trains on: the tokens, and labels -100 on the prompt (padding is the collator's)."""
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": list(s.input_ids),
                               "labels": [-100] * s.prompt_len + list(s.input_ids[s.prompt_len:])} for s in samples])


def _trl_trainer(setup: PeerSetup, model: PreTrainedModel, loss_type: str, run_dir: Path):
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer = SFTTrainer(model=model, args=trl_arguments(sequential_arguments(setup.cfg, run_dir), loss_type),
                         train_dataset=answer_only_dataset(setup.samples), processing_class=setup.tokenizer,
                         data_collator=DataCollatorForLanguageModeling(setup.pad_id))
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_variant(variant: str, setup: PeerSetup, model: PreTrainedModel, ref_logps: list[float],
                  run_dir: Path) -> dict[str, Any]:
    """One `trainer.train()` of `variant` on its own copy of the weights: step periods and the first logged loss."""
    side, loss = VARIANTS[variant]
    trainer = (loss_trainer(LossTrainer, model, setup, list(zip(setup.samples, ref_logps, strict=True)), loss, run_dir)
               if side == "ours" else _trl_trainer(setup, model, loss, run_dir))
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    first = next(h for h in trainer.state.log_history if "loss" in h)
    return {"step_s": clock.periods(), "first_loss": float(first["loss"])}


@torch.no_grad()
def expected_first_losses(model: PreTrainedModel, setup: PeerSetup) -> dict[str, float]:
    """Each variant's loss on the first batch at the initial weights, from our answer log-probs: ours by the
    job's own loss functions (per answer, then the batch mean), TRL's as TRL normalises (per answer token)."""
    from trainers.model.logprobs import answer_logps, answer_mask

    batch_size = int(setup.cfg.train.per_device_batch_size)
    batch = collate(setup.samples[:batch_size], setup.pad_id)
    was_training = model.training
    model.eval()
    lp, tokens, _ = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    model.train(was_training)
    m = batch["n_tokens"].to(lp.dtype)
    per_token = TokenLogps(policy=tokens, sample=answer_mask(batch["labels"]).nonzero()[:, 0])
    ours = {f"ours_{method}": float(LOSSES[method](lp, None, m, None, tokens=per_token).mean())
            for method in ("sft", "dft")}
    trl = {"trl_nll": float(-tokens.sum() / m.sum()), "trl_dft": float(-(tokens.exp() * tokens).sum() / m.sum())}
    return {**ours, **trl}


def _reference(model: PreTrainedModel, setup: PeerSetup) -> list[float]:
    """Cached reference log-probs of the initial model, as a job reads them (minor_sft's rows)."""
    return score_samples(model, setup.samples, setup.letters, setup.pad_id,
                         int(setup.cfg.train.eval_batch_size)).logps.tolist()


def _agreement(runs: dict[str, list[dict]], expected: dict[str, float]) -> dict[str, Any]:
    """First logged loss of each variant (every run starts from the same weights) against `expected`."""
    out = {}
    for variant, want in expected.items():
        got = [r["first_loss"] for r in runs.get(variant, [])]
        if got:
            out[variant] = {"logged": got[0], "expected": want, "max_abs_diff": max(abs(g - want) for g in got)}
    return out


def _ratios(step_s: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """Each pair's ratio, for the pairs whose two variants ran."""
    return {name: ratio_summary(step_s[num], step_s[den]) for name, (num, den) in PAIRS.items()
            if num in step_s and den in step_s}


def first_loss_text(first_loss: dict[str, dict], variants: Sequence[str] | None = None) -> str:
    """`first loss: ours_sft 1.11922 (|Δ| 0.0e+00), ...`: each variant's logged loss and its distance from
    the formula (`variants`: those to show, default every one measured)."""
    shown = [(v, first_loss[v]) for v in (variants or first_loss) if v in first_loss]
    return "first loss: " + ", ".join(f"{v} {f['logged']:.5f} (|Δ| {f['max_abs_diff']:.1e})" for v, f in shown)


def setup_from(data: Any, steps: int) -> PeerSetup:
    """A `PeerSetup` over a bench size's data (`bench.setup.BenchData`): its first `steps` batches, in order."""
    return PeerSetup(cfg=data.cfg, tokenizer=data.tokenizer, pad_id=data.pad_id, letters=list(data.letters),
                     samples=first_batches(data, steps), eval_samples=data.eval_samples[:1])


def measure_peer_in_process(model: PreTrainedModel, setup: PeerSetup, reps: int) -> dict[str, Any]:
    """Rows 10, 12, 13 for one model: every variant alternating in this process (no memory row)."""
    from bench.setup import fresh_copy

    ref = _reference(model, setup)
    expected = expected_first_losses(model, setup)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:

        def variant_run(variant: str) -> Callable[[], list[float]]:
            def run() -> list[float]:
                result = train_variant(variant, setup, fresh_copy(model), ref, Path(tmp))
                runs[variant].append(result)
                return result["step_s"]
            return run

        step_s = interleave({v: variant_run(v) for v in VARIANTS}, reps)
    return {"reps": reps, "steps_per_run": len(setup.samples) // int(setup.cfg.train.per_device_batch_size),
            "median_step_s": {v: median_time(t) for v, t in step_s.items()},
            "ratios": _ratios(step_s), "first_loss": _agreement(runs, expected)}


# ----------------------------------------------------------------- the 151,936-token model, a process each

def _vocab_setup(shape: VocabShape, threads: int, run_dir: Path, device: str = "cpu") -> PeerSetup:
    """The vocab rows' batch, repeated once per step (plus the untimed first step), under a job config
    (bf16 mixed precision on a GPU, as a GPU job runs; fp32 on a CPU)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    cfg = compose_job(["logger=none", f"run_dir={run_dir}", f"train.per_device_batch_size={shape.batch_size}",
                       f"train.global_batch_size={shape.batch_size}", f"train.max_steps={shape.steps + 1}",
                       "train.eval_steps=0", "train.save_steps=0", "train.resume=false", "train.logging_steps=1",
                       f"train.num_threads={threads}", f"train.bf16={str(device == 'cuda').lower()}"])
    # Only the pad token is read (the rows are token ids already): a two-word tokenizer serves both trainers.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                        pad_token="<pad>", eos_token="<pad>", unk_token="<unk>")
    samples = build_batch(shape)["samples"]
    return PeerSetup(cfg=cfg, tokenizer=tokenizer, pad_id=0, letters=[1, 2, 3, 4],
                     samples=samples * (shape.steps + 1), eval_samples=samples[:1])


def child(variant: str, shape: VocabShape, threads: int, device: str = "cpu") -> dict[str, Any]:
    """One process's measurement: step times, the first logged loss, and the process's peak memory."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        setup = _vocab_setup(shape, threads, Path(tmp), device)
        model = build_model(shape).to(device)
        model.config.pad_token_id = model.config.eos_token_id = setup.pad_id  # the tokenizer's: no alignment notice
        model.generation_config.pad_token_id = model.generation_config.eos_token_id = setup.pad_id
        ref = _reference(model, setup) if VARIANTS[variant][1] == "minor_sft" else [0.0] * len(setup.samples)
        expected = expected_first_losses(model, setup)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = train_variant(variant, setup, model, ref, Path(tmp))
    result["expected_first_losses"] = expected
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return {"variant": variant, **result}


def _run_child(variant: str, shape: VocabShape, threads: int, device: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.peer", "--child", variant, "--threads", str(threads), "--device", device,
           "--shape", json.dumps(asdict(shape))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_peer_processes(shape: VocabShape, reps: int, threads: int, device: str = "cpu",
                           variants: Sequence[str] = tuple(VARIANTS), in_process: bool = False) -> dict[str, Any]:
    """Rows 11-14: time ratios and per-process peak-memory ratios, the variants alternating repetition
    after repetition (`in_process`: the harness alone; its memory ratios then mean nothing)."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    order = list(variants)
    for rep in range(reps):
        for variant in (order if rep % 2 == 0 else order[::-1]):
            run = child(variant, shape, threads, device) if in_process else _run_child(variant, shape, threads, device)
            runs[variant].append(run)
    memory_key = "peak_gpu_mb" if device == "cuda" else "peak_rss_mb"
    step_s = {v: [r["step_s"] for r in rs] for v, rs in runs.items()}
    expected = runs[order[0]][0]["expected_first_losses"]  # every process starts from the same seeded weights
    memory = {name: per_rep_summary([a[memory_key] / b[memory_key] for a, b in zip(runs[num], runs[den], strict=True)],
                                    float("nan"))
              for name, (num, den) in PAIRS.items() if num in runs and den in runs}
    return {"shape": asdict(shape), "reps": reps, "device": device, "separate_processes": not in_process,
            "memory_measure": memory_key,
            "median_step_s": {v: median_time(t) for v, t in step_s.items()},
            "peak_memory_mb": {v: max(r[memory_key] for r in rs) for v, rs in runs.items()},
            "ratios": _ratios(step_s),
            "memory": memory, "first_loss": _agreement(runs, expected)}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=sorted(VARIANTS), help="run one measurement and print it as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--smoke", action="store_true", help="a tiny vocabulary: the harness, not the hardware")
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = VocabShape(**json.loads(args.shape)) if args.shape else (SMOKE_SHAPE if args.smoke else VocabShape())
    if args.child:
        began = time.perf_counter()
        result = child(args.child, shape, args.threads, args.device)
        print(json.dumps({**result, "wall_s": time.perf_counter() - began}))
        return
    print(json.dumps(measure_peer_processes(shape, args.reps, args.threads, args.device), indent=2, default=str))


if __name__ == "__main__":
    main()
