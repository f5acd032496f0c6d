"""`make bench`: the ratios of docs/benchmarks.md, measured side by side in one run, into bench/results.json.

    python -m bench                     # full run (~5-10 min on 2 CPU cores)
    python -m bench --smoke             # two steps, one repetition: the harness, not the hardware
    python -m bench --threads 1 --sizes tiny
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from bench.evals import measure_eval
from bench.grid import measure_grid
from bench.peer import measure_peer_in_process, measure_peer_processes, setup_from
from bench.report import GPU_NOTE, format_table
from bench.setup import MediumSpec, ensure_world, job_overrides, load_data, medium_model, model_summary
from bench.steps import measure_steps
from bench.vocab import SMOKE_SHAPE, VocabShape, measure_vocab
from trainers.job.config import compose_job
from trainers.runtime.run_dir import atomic_write_text
from trainers.world.build import EmbeddedWorld

log = logging.getLogger("bench")

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class SizePlan:
    """How much of each measurement one model size gets (the medium model is ~40x slower per step)."""

    batch_size: int
    steps: int
    reps: int
    eval_questions: int | None  # None: the whole eval set


# Short runs, many repetitions: finer interleaving is what keeps other processes' bursts out of the ratios.
FULL_PLANS = {"tiny": SizePlan(batch_size=32, steps=6, reps=12, eval_questions=None),
              "medium": SizePlan(batch_size=8, steps=4, reps=6, eval_questions=64)}
SMOKE_PLANS = {"tiny": SizePlan(batch_size=8, steps=2, reps=1, eval_questions=16),
               "medium": SizePlan(batch_size=4, steps=2, reps=1, eval_questions=8)}
SMOKE_MEDIUM = MediumSpec(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (written atomically)")
    p.add_argument("--smoke", action="store_true", help="two steps, one repetition, a micro 'medium' model")
    p.add_argument("--sizes", default="tiny,medium", help="comma-separated: tiny (embedded model), medium (~21M)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the job config's)")
    p.add_argument("--world-root", type=Path, default=None,
                   help="an already built embedded world to use (default: the job config's, built if missing)")
    p.add_argument("--reps", type=int, default=None, help="override the interleaved repetitions of every size")
    p.add_argument("--grid-steps", type=int, default=None, help="training steps per grid job (default 2, smoke 1)")
    p.add_argument("--no-grid", action="store_true", help="skip row 5 (it is model-independent)")
    p.add_argument("--no-vocab", action="store_true", help="skip rows 6-9 (the 151,936-token vocabulary, ~5 min)")
    p.add_argument("--no-peer", action="store_true", help="skip rows 10-14 (against TRL's SFTTrainer, ~8 min)")
    return p.parse_args(argv)


def world_for(args: argparse.Namespace) -> EmbeddedWorld:
    """The world the job config points at (built on first use), or the one given on the command line."""
    if args.world_root is not None:
        root = args.world_root.resolve()
        return EmbeddedWorld(root, root / "model", root / "train.csv", root / "eval.csv")
    return ensure_world(Path(compose_job([]).paths.embedded_dir), None)


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on; load averages show how shared the machine was."""
    names = (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name"))
    cpu = next(names, platform.processor())
    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def bench_size(name: str, plan: SizePlan, world: EmbeddedWorld, work: Path, threads: int, spec: MediumSpec,
               peer: bool) -> dict:
    """Rows 1-4 for one model size, and rows 10, 12, 13 (against TRL) unless `peer` is off."""
    overrides = job_overrides(world) + [f"paths.cache_dir={work / 'cache'}", f"run_dir={work / 'run'}",
        f"train.per_device_batch_size={plan.batch_size}", f"train.global_batch_size={plan.batch_size}",
        "train.max_steps=-1", f"train.num_threads={threads}",
    ]
    data, tiny = load_data(compose_job(overrides))
    model = tiny if name == "tiny" else medium_model(data.cfg, data.tokenizer, spec)
    log.info("bench %s: %s params, steps (batch %d, %d steps x %d reps)", name,
             f"{model_summary(model)['params']:,}", plan.batch_size, plan.steps, plan.reps)
    steps = measure_steps(model, data, plan.steps, plan.reps)
    log.info("bench %s: evaluation (%s questions)", name, plan.eval_questions or len(data.eval_samples))
    evals = measure_eval(model, data, plan.eval_questions, plan.reps)
    against_trl = None
    if peer:
        log.info("bench %s: LossTrainer against TRL's SFTTrainer (%d steps x %d reps)", name, plan.steps, plan.reps)
        against_trl = measure_peer_in_process(model, setup_from(data, plan.steps), plan.reps)
    return {"model": model_summary(model), "steps": steps, "eval": evals, "peer": against_trl}


def build_results(
    sizes: dict[str, dict], grid: dict | None, info: dict, args: argparse.Namespace, vocab: dict | None = None,
    peer_vocab: dict | None = None,
) -> dict:
    """results.json: the rows (per model size), raw medians, and where they were measured."""
    def per_size(pick) -> dict:
        return {name: pick(r) for name, r in sizes.items()}

    rows = [
        {"row": 1, "name": "minor_sft step (cached reference log-probs) / sft step", "goal": "<= 1.05",
         "results": per_size(lambda r: r["steps"]["ratios"]["minor_cached_over_sft"])},
        {"row": 2, "name": "minor_sft step (live reference forward, TRL/LLaMA-Factory default) / sft step",
         "goal": None, "results": per_size(lambda r: r["steps"]["ratios"]["minor_live_over_sft"])},
        {"row": 3, "name": "LossTrainer step / bare PyTorch loop step", "goal": "<= 1.10",
         "results": per_size(lambda r: r["steps"]["ratios"]["trainer_over_bare"])},
        {"row": 4, "name": "eval questions/s: one pass per question / one pass per option", "goal": ">= 3",
         "results": per_size(lambda r: r["eval"])},
        {"row": 5, "name": "N-job grid: tokenisations and reference passes", "goal": "1 and 1",
         "results": {"grid": grid} if grid is not None else {}},
    ]
    if vocab is not None:
        label = f"vocab {vocab['shape']['vocab_size']}"
        for row, phase, measure, goal in ((6, "train", "time", "<= 0.15"), (7, "train", "memory", "<= 0.4"),
                                          (8, "eval", "time", "<= 0.15"), (9, "eval", "memory", "<= 0.4")):
            rows.append({"row": row, "name": f"{phase} {'step' if phase == 'train' else 'batch'} {measure}, "
                         "answer-only logits / full logits", "goal": goal,
                         "results": {label: vocab[phase][measure]}})
    rows += peer_rows(sizes, peer_vocab)
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": info,
        "gpu": GPU_NOTE,
        "models": {name: r["model"] for name, r in sizes.items()},
        "median_step_s": {name: r["steps"]["median_step_s"] for name, r in sizes.items()},
        "settings": {name: {k: v for k, v in r["steps"].items() if k not in ("median_step_s", "ratios")}
                     for name, r in sizes.items()},
        "rows": rows,
        "vocab": vocab,
        "peer": {"sizes": {name: r["peer"] for name, r in sizes.items() if r.get("peer")}, "vocab": peer_vocab},
    }


def peer_rows(sizes: dict[str, dict], peer_vocab: dict | None) -> list[dict]:
    """Rows 10-14: our step against TRL's SFTTrainer (bench/peer.py); each result carries its first-step losses."""
    in_process = {name: r["peer"] for name, r in sizes.items() if r.get("peer")}

    def on_sizes(ratio: str) -> dict:
        return {name: {**p["ratios"][ratio], "first_loss": p["first_loss"]} for name, p in in_process.items()}

    def on_vocab(ratio: str, kind: str = "ratios") -> dict:
        if peer_vocab is None:
            return {}
        return {f"vocab {peer_vocab['shape']['vocab_size']}": {
            **peer_vocab[kind][ratio], "first_loss": peer_vocab["first_loss"],
            "peak_memory_mb": peer_vocab["peak_memory_mb"]}}

    return [
        {"row": 10, "name": "sft step: LossTrainer / TRL SFTTrainer (loss_type=nll)", "goal": "<= 1.0",
         "results": on_sizes("sft_over_trl_nll")},
        {"row": 11, "name": "sft step: LossTrainer / TRL SFTTrainer (loss_type=nll), Qwen2 vocabulary",
         "goal": "<= 0.2", "results": on_vocab("sft_over_trl_nll")},
        {"row": 12, "name": "minor_sft step (cached reference): LossTrainer / TRL SFTTrainer (nll)", "goal": None,
         "results": {**on_sizes("minor_sft_over_trl_nll"), **on_vocab("minor_sft_over_trl_nll")}},
        {"row": 13, "name": "dft step: LossTrainer / TRL SFTTrainer (loss_type=dft)", "goal": None,
         "results": {**on_sizes("dft_over_trl_dft"), **on_vocab("dft_over_trl_dft")}},
        {"row": 14, "name": "sft step peak memory: LossTrainer / TRL SFTTrainer (nll), a process each",
         "goal": "<= 1.0", "results": on_vocab("sft_over_trl_nll", "memory")},
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("transformers", "trainers", "httpx", "lm-eval", "lm_eval"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    threads = args.threads or int(compose_job([]).train.num_threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    world = world_for(args)
    plans = SMOKE_PLANS if args.smoke else FULL_PLANS
    spec = SMOKE_MEDIUM if args.smoke else MediumSpec()
    info = machine_info(threads)
    sizes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sftsweep-bench-") as tmp:
        for name in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            plan = plans[name] if args.reps is None else SizePlan(**{**asdict(plans[name]), "reps": args.reps})
            sizes[name] = bench_size(name, plan, world, Path(tmp), threads, spec, peer=not args.no_peer)
        grid = None
        if not args.no_grid:
            log.info("bench grid: 6 jobs on the tiny model, one shared cache")
            grid_overrides = job_overrides(world) + [
                f"train.num_threads={threads}", f"train.per_device_batch_size={plans['tiny'].batch_size}",
                f"train.global_batch_size={plans['tiny'].batch_size}",
            ]
            grid = measure_grid(grid_overrides, args.grid_steps or (1 if args.smoke else 2), Path(tmp))
    vocab = None
    if not args.no_vocab:
        log.info("bench vocab: train step and eval batch on a %s-token vocabulary, each in its own process",
                 f"{(SMOKE_SHAPE if args.smoke else VocabShape()).vocab_size:,}")
        vocab = measure_vocab(SMOKE_SHAPE if args.smoke else VocabShape(), reps=1 if args.smoke else (args.reps or 2),
                              threads=threads, in_process=args.smoke)
    peer_vocab = None
    if not args.no_peer:
        shape = SMOKE_SHAPE if args.smoke else VocabShape()
        log.info("bench peer: LossTrainer against TRL's SFTTrainer on a %s-token vocabulary, a process each",
                 f"{shape.vocab_size:,}")
        peer_vocab = measure_peer_processes(shape, reps=1 if args.smoke else (args.reps or 2), threads=threads,
                                            in_process=args.smoke)
    info["load_average_end"] = list(os.getloadavg())
    results = build_results(sizes, grid, info, args, vocab, peer_vocab)
    results["world"] = _world_manifest(world)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2, default=_json_default) + "\n")
    print(format_table(results))
    print(f"\nwritten: {args.out}")
    return results


def _world_manifest(world: EmbeddedWorld) -> dict | None:
    try:
        manifest = json.loads((world.root / "world.json").read_text())
    except (OSError, ValueError):
        return None
    return {"root": str(world.root), "version": manifest.get("version"), "stats": manifest.get("stats")}


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
