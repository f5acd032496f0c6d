"""`make bench-gpu`: the training step on one GPU, for a Qwen2-0.5B-shaped model built from a config.

No download: the weights are random (a step's cost does not depend on what they know). bf16 mixed
precision as a job runs it by default (fp32 master weights and AdamW state, bf16 autocast), sdpa
attention, answer-only logits, fused AdamW. Printed and written to bench/gpu_results.json:

- tokens/s and step time per batch size (a batch that does not fit is reported as OOM, not fatal);
- model FLOPs utilisation, MFU = achieved FLOP/s ÷ the card's dense bf16 peak, with the FLOPs a step
  must do: 6·N·T for the non-embedding parameters N over T input tokens, 6·V·d per answer token for
  the LM head (it runs at the answer positions only), and 6·L·d·S per token for causal attention
  (QKᵀ and AV, forward and backward, half the S×S square); the peak is read from the device name
  (table below) or given with --peak-tflops;
- peak GPU memory (torch.cuda.max_memory_allocated), and minor_sft ÷ sft step time.

    python -m bench.gpu                                   # on a CUDA machine
    python -m bench.gpu --device cpu --shape tiny --steps 1   # the harness alone, anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.qwen2 import SHAPES, ModelShape, build_model, make_batch

log = logging.getLogger("bench.gpu")

DEFAULT_OUT = Path(__file__).resolve().parent / "gpu_results.json"

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, and the card's full
# multiprocessor count (a MIG slice or a card with SMs disabled gets its share). Matched in order against the
# name CUDA reports, e.g. "NVIDIA H100 80GB HBM3" (SXM: the PCIe card is "NVIDIA H100 PCIe", with HBM2e),
# "NVIDIA H100 NVL", "NVIDIA H200", "NVIDIA A100-SXM4-80GB".
PEAK_BF16_TFLOPS: tuple[tuple[str, float, int], ...] = (
    ("GH200", 989.0, 132), ("H200 NVL", 835.0, 132), ("H200", 989.0, 132),
    ("H100 NVL", 835.0, 132), ("H100 PCIe", 756.0, 114), ("H100 SXM", 989.0, 132), ("H100 80GB HBM3", 989.0, 132),
    ("A100", 312.0, 108), ("L40S", 362.0, 142), ("L40", 181.0, 142), ("A10G", 70.0, 80), ("L4", 121.0, 58),
    ("RTX 4090", 165.0, 128),
)


def peak_for(name: str, memory_gib: float, multiprocessors: int | None) -> tuple[float | None, str]:
    """The dense bf16 peak of a device from what CUDA reports of it (name, memory, multiprocessors), and why.

    A bare "H100" is told apart by its memory: 94 GB is the NVL card; 80 GB could be SXM or PCIe, so it
    is unknown rather than guessed. A device with fewer multiprocessors than the full card (a MIG slice)
    gets the table's peak × its share of them."""
    key, peak, full_sms = None, None, None
    for k, value, sms in PEAK_BF16_TFLOPS:
        if k in name:
            key, peak, full_sms = k, value, sms
            break
    if key is None and "H100" in name and memory_gib > 90:
        key, peak, full_sms = "H100 with > 90 GiB (NVL)", 835.0, 132
    if key is None:
        return None, f"no table entry for {name!r} ({memory_gib:.0f} GiB): pass the peak by hand"
    source = f"data sheet {key!r} for {name!r}"
    if multiprocessors is not None and multiprocessors < full_sms:
        return peak * multiprocessors / full_sms, f"{source}, × {multiprocessors}/{full_sms} multiprocessors"
    return peak, source


def flops_per_token(non_embedding_params: int, num_layers: int, hidden_size: int, seq_len: float) -> float:
    """Training FLOPs (forward and backward) per input token, PaLM's model FLOPs (Chowdhery et al. 2022,
    appendix B: 6·N + 12·L·H·Q·T, with H·Q = d the model width and T the sequence length) with causal
    attention's half of the S×S square: 6·N + 6·L·d·S. N counts the parameters outside the embedding
    and the LM head (Kaplan et al. 2020, §2.1), whose FLOPs per token are 2 forward + 4 backward."""
    return 6.0 * non_embedding_params + 6.0 * num_layers * hidden_size * seq_len


def mfu(tokens_per_s: float, per_token_flops: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: the FLOP/s the model's arithmetic needs at this throughput ÷ the peak."""
    return tokens_per_s * per_token_flops / (peak_tflops * 1e12)


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding and the LM head (one matrix when they are tied)."""
    embeddings = {id(m.weight): m.weight.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())
                  if m is not None}
    return sum(p.numel() for p in model.parameters()) - sum(embeddings.values())


def step_flops(shape: ModelShape, n_params: int, batch_size: int, seq_len: int, answer_tokens: int) -> float:
    """FLOPs of one training step (forward and backward), as the module docstring defines them."""
    tokens = batch_size * seq_len
    non_embedding = n_params - shape.vocab_size * shape.hidden_size  # tied: one matrix
    head = 6 * shape.vocab_size * shape.hidden_size * batch_size * answer_tokens
    return flops_per_token(non_embedding, shape.num_layers, shape.hidden_size, seq_len) * tokens + head


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model: torch.nn.Module, batch: dict, method: str, beta: float, steps: int,
               device: torch.device, bf16: bool) -> list[float]:
    """Wall time of `steps` training steps after one warm-up step (which allocates AdamW state)."""
    from trainers.model.logprobs import answer_logps
    from trainers.model.losses import LOSSES

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    with torch.no_grad(), autocast:
        ref = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0].float()
    times = []
    for i in range(steps + 1):
        _sync(device)
        began = time.perf_counter()
        with autocast:
            lp = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
        loss = LOSSES[method](lp, ref, batch["n_tokens"], beta).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i:
            times.append(time.perf_counter() - began)
    return times


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """The card's dense bf16 peak and where it came from."""
    if given:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for this device: pass --peak-tflops"
    props = torch.cuda.get_device_properties(device)
    return peak_for(props.name, props.total_memory / 2**30, props.multi_processor_count)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    model = build_model(shape, device)
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for batch_size in args.batch_sizes:
        row: dict[str, Any] = {"batch_size": batch_size, "seq_len": args.seq_len}
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            batch = make_batch(shape, batch_size, args.seq_len, args.answer_tokens, device)
            per_method = {m: time_steps(model, batch, m, args.beta, args.steps, device, not args.fp32)
                          for m in ("sft", "minor_sft")}
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
            rows.append(row)
            log.info("batch %d x %d: out of memory", batch_size, args.seq_len)
            break
        step_s = statistics.median(per_method["sft"])
        flops = step_flops(shape, n_params, batch_size, args.seq_len, args.answer_tokens)
        row.update({
            "status": "ok",
            "step_s": {m: statistics.median(t) for m, t in per_method.items()},
            "tokens_per_s": batch_size * args.seq_len / step_s,
            "tflops_per_s": flops / step_s / 1e12,
            "mfu": flops / step_s / (peak * 1e12) if peak else None,
            "minor_sft_over_sft": statistics.median(per_method["minor_sft"]) / step_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        })
        rows.append(row)
        log.info("batch %d x %d: %.0f tokens/s, MFU %s, minor_sft/sft %.3f", batch_size, args.seq_len,
                 row["tokens_per_s"], "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}", row["minor_sft_over_sft"])
    peer = None
    if args.peer_reps:
        from bench.peer import measure_peer_processes
        from bench.vocab import VocabShape

        fits = [r["batch_size"] for r in rows if r["status"] == "ok"]
        peer_shape = VocabShape(
            vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
            num_layers=shape.num_layers, num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads,
            batch_size=min(fits or [1]), seq_len=args.seq_len, answer_tokens=args.answer_tokens, steps=args.steps)
        log.info("LossTrainer against TRL's SFTTrainer: batch %d x %d, a process each", peer_shape.batch_size,
                 peer_shape.seq_len)
        del model
        peer = measure_peer_processes(peer_shape, args.peer_reps, threads=torch.get_num_threads(), device=device.type)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "peer": peer,
        "torch": torch.__version__, "shape": args.shape, "model": asdict(shape), "params": n_params,
        "precision": "fp32" if args.fp32 else "bf16 autocast, fp32 master weights",
        "answer_tokens": args.answer_tokens, "steps": args.steps,
        "peak_bf16_tflops": peak, "peak_source": peak_source, "rows": rows,
    }


def format_rows(results: dict[str, Any]) -> str:
    lines = [f"{results['device']}  {results['shape']} ({results['params'] / 1e6:.0f}M params), {results['precision']};"
             f" peak {results['peak_bf16_tflops']} TFLOP/s ({results['peak_source']})"]
    for r in results["rows"]:
        if r["status"] != "ok":
            lines.append(f"  batch {r['batch_size']:>3} x {r['seq_len']}: {r['status']}")
            continue
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f} GiB"
        lines.append(f"  batch {r['batch_size']:>3} x {r['seq_len']}: {r['tokens_per_s']:,.0f} tokens/s, "
                     f"{r['tflops_per_s']:.1f} TFLOP/s, MFU {mfu}, peak {mem}, "
                     f"minor_sft/sft {r['minor_sft_over_sft']:.3f}")
    peer = results.get("peer")
    if peer:
        lines.append(f"  against TRL's SFTTrainer (batch {peer['shape']['batch_size']} x {peer['shape']['seq_len']}, "
                     f"{peer['reps']} reps, a process each; {peer['memory_measure']}):")
        for name, r in peer["ratios"].items():
            mem = peer["memory"].get(name)
            lines.append(f"    {name}: step time {r['ratio']:.3f} [{r['min']:.2f}-{r['max']:.2f}]"
                         + (f", peak memory {mem['ratio']:.3f}" if mem else ""))
        from bench.peer import first_loss_text

        lines.append("    " + first_loss_text(peer["first_loss"]))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16, 32],
                   help="comma-separated; stops at the first that does not fit")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--answer-tokens", type=int, default=6)
    p.add_argument("--steps", type=int, default=5, help="timed steps per method and batch size")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: table)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--peer-reps", type=int, default=2,
                   help="repetitions of the rows against TRL's SFTTrainer (bench/peer.py); 0 skips them")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no GPU is visible here; run on a GPU machine or pass --device cpu")
    results = measure(args)
    from trainers.runtime.run_dir import atomic_write_text

    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(format_rows(results))
    print(f"\nwritten: {args.out}")
    return results


if __name__ == "__main__":
    main()
