"""Rows 6-9: a training step and an evaluation batch on a real 151,936-token vocabulary, answer-only ÷ full logits.

The model is Qwen2-shaped (Qwen2's vocabulary, tied embeddings) but shallow and narrow enough for
two CPU cores; the batch is like the paper's prompts: 8 questions × 256 tokens, 6 answer tokens
each. "full" is what the code did before answer-only logits: the model's whole `[batch, length,
vocab]` logits, then the answer positions picked out (`losses.sequence_logps`); "answer-only" is
what training and scoring do now (`trainers.model.logprobs`, `trainers.model.scoring.score_samples`).

Peak memory is a process's peak resident set, so every (variant, phase) runs in a process of its
own; the processes alternate, repetition after repetition, so that the machine's slow phases hit
both variants alike.

    python -m bench.vocab                       # rows 6-9 alone
    python -m bench.vocab --child train lean    # one measurement, JSON on stdout (used by the parent)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.qwen2 import ModelShape
from bench.qwen2 import build_model as build_qwen2
from bench.timing import per_rep_summary

QWEN2_VOCAB = 151_936


@dataclass(frozen=True)
class VocabShape:
    """Model and batch of the measurement; the default is the issue's shape."""

    vocab_size: int = QWEN2_VOCAB
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    batch_size: int = 8
    seq_len: int = 256
    answer_tokens: int = 6
    steps: int = 3  # timed steps per process, after one untimed warm-up step


SMOKE_SHAPE = VocabShape(vocab_size=4096, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                         num_kv_heads=1, batch_size=2, seq_len=32, answer_tokens=3, steps=1)


def build_model(shape: VocabShape) -> torch.nn.Module:
    """The benches' Qwen2 (bench/qwen2.py), at this row's shape, on the CPU."""
    return build_qwen2(ModelShape(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_layers=shape.num_layers, num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads,
        max_positions=shape.seq_len,
    ), torch.device("cpu"))


def build_batch(shape: VocabShape) -> dict[str, torch.Tensor]:
    """Random prompts of slightly different lengths (right-padded), each followed by its answer."""
    from trainers.data.batching import collate
    from trainers.data.prompts import Sample

    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(shape.batch_size):
        n = shape.seq_len - (i % 4) * 4  # varying lengths, as real prompts have
        ids = torch.randint(1, shape.vocab_size, (n,), generator=g).tolist()
        samples.append(Sample(id=str(i), subject="", input_ids=ids, prompt_len=n - shape.answer_tokens, gold=0))
    return {"samples": samples, **collate(samples, pad_id=0)}


def _train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, variant: str) -> torch.Tensor:
    """One SFT step; returns the loss (a tensor: reading it would add a sync to the timed steps)."""
    from trainers.model.logprobs import answer_logps
    from trainers.model.losses import LOSSES, sequence_logps

    if variant == "lean":
        lp = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp = sequence_logps(logits, batch["labels"])
    loss = LOSSES["sft"](lp, None, batch["n_tokens"], None).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def _eval_batch(model: torch.nn.Module, batch: dict, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted letters, answer log-probs) of one evaluation batch."""
    from trainers.model.losses import sequence_logps
    from trainers.model.scoring import score_samples

    letters = [1, 2, 3, 4]
    if variant == "lean":
        scores = score_samples(model, batch["samples"], letters, 0, len(batch["samples"]))
        return scores.preds, scores.logps
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = sequence_logps(logits, batch["labels"])
    rows = torch.arange(logits.shape[0])
    return logits[rows, batch["answer_pos"]][:, letters].argmax(-1), logps


def child(phase: str, variant: str, shape: VocabShape, threads: int) -> dict[str, Any]:
    """One process's measurement: step times, the process's peak resident memory, and what the first step
    computed (the loss of the training step; predictions and answer log-probs of the evaluation batch), which
    both variants compute from the same weights and batch."""
    torch.set_num_threads(threads)
    model, batch = build_model(shape), build_batch(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if phase == "train" else None
    times, first = [], {}
    for i in range(shape.steps + 1):
        began = time.perf_counter()
        if optimizer is not None:
            out = {"loss": _train_step(model, batch, optimizer, variant)}
        else:
            preds, logps = _eval_batch(model, batch, variant)
            out = {"preds": preds, "logps": logps}
        if i:  # the first step allocates optimizer state and warms the allocator
            times.append(time.perf_counter() - began)
        else:
            first = {k: v.tolist() for k, v in out.items()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"phase": phase, "variant": variant, "step_s": times, "peak_rss_mb": peak_mb, "first_step": first}


def _run_child(phase: str, variant: str, shape: VocabShape, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.vocab", "--child", phase, variant, "--threads", str(threads),
           "--shape", json.dumps(asdict(shape))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_vocab(shape: VocabShape, reps: int, threads: int, in_process: bool = False) -> dict[str, Any]:
    """Rows 6-9: per phase, time and peak-memory ratios answer-only ÷ full, paired within each repetition.

    `in_process` runs every measurement in this process (a harness check: the peak memory is then
    this process's, shared by all variants, so its ratio means nothing).
    """
    runs: dict[tuple[str, str], list[dict]] = {}
    order = [(p, v) for p in ("train", "eval") for v in ("full", "lean")]
    for rep in range(reps):
        for phase, variant in (order if rep % 2 == 0 else order[::-1]):
            run = child(phase, variant, shape, threads) if in_process else _run_child(phase, variant, shape, threads)
            runs.setdefault((phase, variant), []).append(run)
    out: dict[str, Any] = {"shape": asdict(shape), "reps": reps, "separate_processes": not in_process}
    for phase in ("train", "eval"):
        full, lean = runs[(phase, "full")], runs[(phase, "lean")]
        pairs = list(zip(full, lean, strict=True))  # the same repetition's full and answer-only runs
        time_ratios = [statistics.median(b["step_s"]) / statistics.median(a["step_s"]) for a, b in pairs]
        mem_ratios = [b["peak_rss_mb"] / a["peak_rss_mb"] for a, b in pairs]
        out[phase] = {
            "median_step_s": {"full": statistics.median(t for r in full for t in r["step_s"]),
                              "lean": statistics.median(t for r in lean for t in r["step_s"])},
            "peak_rss_mb": {"full": max(r["peak_rss_mb"] for r in full), "lean": max(r["peak_rss_mb"] for r in lean)},
            "time": per_rep_summary(time_ratios, min(t for r in lean for t in r["step_s"])
                           / min(t for r in full for t in r["step_s"])),
            "memory": per_rep_summary(mem_ratios,
                                      min(r["peak_rss_mb"] for r in lean) / min(r["peak_rss_mb"] for r in full)),
            "agreement": _agreement(full[0]["first_step"], lean[0]["first_step"]),
        }
    return out


def _agreement(full: dict[str, Any], lean: dict[str, Any]) -> dict[str, Any]:
    """What the two variants computed on the first step from the same weights and batch: the largest
    difference of each value, and whether the predicted letters are the same."""
    out: dict[str, Any] = {}
    for key in ("loss", "logps"):
        if key in full:
            a, b = torch.tensor(full[key]), torch.tensor(lean[key])
            out[f"{key}_max_abs_diff"] = float((a - b).abs().max())
            out[f"{key}_full"] = full[key]
    if "preds" in full:
        out["preds_agree"] = full["preds"] == lean["preds"]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.vocab", description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=2, metavar=("PHASE", "VARIANT"), help="run one measurement (train|eval full|lean)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="a tiny vocabulary: the harness, not the hardware")
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = VocabShape(**json.loads(args.shape)) if args.shape else (SMOKE_SHAPE if args.smoke else VocabShape())
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], shape, args.threads)))
        return
    print(json.dumps(measure_vocab(shape, args.reps, args.threads), indent=2))


if __name__ == "__main__":
    main()
