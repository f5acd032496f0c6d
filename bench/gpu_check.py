"""The GPU check of bench/gpu_check.sh: real jobs on one GPU, within a time budget, into one JSON.

A GPU machine is lent for minutes at a time, so the check runs its stages most-wanted first, checks its
deadline before each stage, kills a job that would outlast it (its whole process tree), and writes
`<out>/gpu_check.json` after every stage: what it measured, and under `not_measured` what it could not and why.
Every job goes through the real job path (`python -m trainers.train` → agent → torch.distributed.run →
worker → HF Trainer + accelerate), with the interpreter that runs this module (the node's own).

Stages: `setup` (a briefly pretrained embedded world and a model of the chosen shape); `job-<strategy>` (a
training job: peak GPU memory against the plan, and MFU from the steps after warm-up); `first-m-theta` (the
first training step's mθ per method, from the world's trained model: ≤ 1e-3 when the reference is scored the
way training computes); `resume` (a checkpoint on the scheduler's warning, SIGKILL, resume); `bench-gpu`
(python -m bench.gpu's rows at 1,024-token sequences).

    python -m bench.gpu_check run <out> [--budget-s S] [--strategies fsdp ...] [--sharded fsdp] [--shape S]
    python -m bench.gpu_check setup <out> <shape> <world_steps>     # one stage, as `run` starts it
    python -m bench.gpu_check summary <run_dir> <override>...        # a job's result against its plan
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.gpu import SHAPES, flops_per_token, mfu, non_embedding_params, peak_tflops
from trainers.job.config import compose_job
from trainers.job.plan import make_plan
from trainers.job.save_request import REQUEST, SAVED
from trainers.runtime.run_dir import METRICS, OK, RESULT, atomic_write_json, read_jsonl

RESULT_NAME = "gpu_check.json"
WARMUP_STEPS = 3  # logged steps left out of MFU: the first holds CUDA/NCCL warm-up and allocator growth
METHODS_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


class Deadline:
    """The check's own end: every stage asks how long is left before it starts, every job is cut there."""

    def __init__(self, end_epoch_s: float):
        self.end = end_epoch_s  # wall clock: the shell that started the check set it, before any import

    def left(self) -> float:
        return self.end - time.time()


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torch's launcher starts its workers in new sessions, so a
    process group would miss them)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def run_module(args: Sequence[str], log: Path, deadline: Deadline) -> int | None:
    """`python -m <args>` with this interpreter, output to `log`; None when the deadline cut it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=max(deadline.left(), 0.0))
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
            return None


def tail(log: Path, lines: int = 8) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def model_arithmetic(model_dir: Path) -> dict[str, Any]:
    """The FLOP count's inputs from a model's config.json: parameters outside the embeddings (an empty
    model on the meta device counts them), layers, width."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {"params": sum(p.numel() for p in model.parameters()), "non_embedding_params": non_embedding_params(model),
            "num_layers": config.num_hidden_layers, "hidden_size": config.hidden_size}


def step_throughput(rows: list[dict[str, Any]], warmup: int = WARMUP_STEPS) -> float | None:
    """Median tokens/s of the logged training steps after `warmup` (each row's tokens/s is over its own
    logging interval, so wrapping, broadcast and the first steps' warm-up are not in it); None if none."""
    values = [r["tokens_per_s"] for r in rows if r.get("step", 0) > warmup and r.get("tokens_per_s")]
    return statistics.median(values) if values else None


def summary(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """A job's result against its plan: peak GPU memory ÷ the plan's per-GPU figure; MFU from the steps after
    warm-up, (6·N + 6·L·d·S)·tokens/s ÷ the device's dense bf16 peak (bench/gpu.py flops_per_token), S the
    mean sequence length the job trained on (its tokens ÷ steps ÷ samples per step). The LM head, computed at
    the answer positions only, is not counted: a few per cent low for a 0.5B model with short answers."""
    r = json.loads((run_dir / RESULT).read_text())
    cfg = compose_job(overrides)
    plan = make_plan(cfg)
    plan_gb = plan.device.total(plan.gradient_checkpointing) / 2**30
    peak_mem = r.get("peak_gpu_memory_gb")
    out: dict[str, Any] = {
        "status": r["status"], "error": r.get("error"), "steps": r.get("steps"),
        "resumed_from_step": r.get("resumed_from_step"), "world_size": r.get("world_size"),
        "tokens_per_s_whole_fit": r.get("tokens_per_s"), "peak_gpu_memory_gb": peak_mem, "plan_gpu_gb": plan_gb,
        "peak_over_plan": peak_mem / plan_gb if peak_mem is not None else None,
        "gradient_checkpointing": plan.gradient_checkpointing}
    rows = read_jsonl(run_dir / METRICS) if (run_dir / METRICS).exists() else []
    tokens_per_s = step_throughput(rows)
    out["tokens_per_s_after_warmup"] = tokens_per_s
    out["warmup_steps"] = WARMUP_STEPS
    if not (tokens_per_s and r.get("steps") and r.get("effective_batch")):
        out["mfu"], out["mfu_why_not"] = None, f"no logged step after the {WARMUP_STEPS} warm-up steps"
        return out
    shape = model_arithmetic(Path(cfg.model.path))
    seq_len = r["train_tokens"] / r["steps"] / r["effective_batch"]
    per_token = flops_per_token(shape["non_embedding_params"], shape["num_layers"], shape["hidden_size"], seq_len)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak, source = peak_tflops(device, None)
    out.update({**shape, "mean_seq_len": seq_len, "flops_per_token": per_token,
                "achieved_tflops": tokens_per_s * per_token / 1e12, "peak_bf16_tflops": peak, "peak_source": source,
                "mfu": mfu(tokens_per_s, per_token, peak) if peak else None})
    return out


def first_m_theta(run_dir: Path) -> float | None:
    """m_theta logged at training step 1: the policy's own forward before any update, against the cached
    reference (0 up to float noise when the reference is scored in the precision training computes in)."""
    rows = [row for row in read_jsonl(run_dir / METRICS) if row.get("step") == 1] \
        if (run_dir / METRICS).exists() else []
    return rows[0].get("m_theta") if rows else None


def request_save(run_dir: Path, after_step: int, deadline: Deadline) -> int | str:
    """Once the job has logged `after_step`, write the request SLURM's warning makes the launcher write
    (trainers/job/save_request.py) and wait for the job's answer: the step it saved at, or why not."""
    while deadline.left() > 0:
        rows = read_jsonl(run_dir / METRICS) if (run_dir / METRICS).exists() else []
        if rows and max(row.get("step", 0) for row in rows) >= after_step:
            break
        if (run_dir / RESULT).exists():
            return f"the job ended before step {after_step}"
        time.sleep(0.2)
    else:
        return f"no step {after_step} logged within the budget"
    atomic_write_json(run_dir / REQUEST, {"requested_at": time.time()})
    while deadline.left() > 0:
        if (run_dir / SAVED).exists():
            return int(json.loads((run_dir / SAVED).read_text())["step"])
        if (run_dir / RESULT).exists():
            return "the job ended before it saw the request: give it more steps"
        time.sleep(0.2)
    return "no checkpoint within the budget"


def setup(out: Path, shape_name: str, world_steps: int) -> dict[str, Any]:
    """A small embedded world pretrained for `world_steps` (its trained model scores step-0 mθ; its tokenizer
    and questions feed every job), then a random model of `shape_name` with that tokenizer (no download)."""
    import shutil

    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from trainers.world.build import ensure_embedded_world
    from trainers.world.facts import WorldConfig

    world = ensure_embedded_world(out / "world", WorldConfig(
        n_entities=48, n_train_entities=24, n_attributes=4, n_train_questions=96, n_eval_questions=64,
        pretrain_steps=world_steps, warmup_steps=min(50, world_steps // 5), batch_size=16, threads=4))
    model_dir = out / f"{shape_name}-shape"
    if not (model_dir / "config.json").exists():
        s = SHAPES[shape_name]
        if len(AutoTokenizer.from_pretrained(world.model_dir)) > s.vocab_size:
            raise SystemExit(f"error: shape {shape_name}'s vocabulary is smaller than the world's tokenizer")
        torch.manual_seed(0)
        config = Qwen2Config(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                             num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads,
                             num_key_value_heads=s.num_kv_heads, max_position_embeddings=s.max_positions,
                             tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"])
        Qwen2ForCausalLM(config).save_pretrained(model_dir)
        for f in world.model_dir.iterdir():
            if "token" in f.name or f.name == "special_tokens_map.json":
                shutil.copy(f, model_dir / f.name)
    stats = json.loads((world.root / "world.json").read_text())["stats"]
    return {"world": str(world.root), "world_pretrain_steps": world_steps, "world_stats": stats,
            "model": str(model_dir)}


def deepspeed_import() -> str:
    """"ok" where DeepSpeed imports (the kit carries it), else why not: a subprocess, so that a failed import
    leaves nothing behind in this one."""
    proc = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True)
    return "ok" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def environment() -> dict[str, Any]:
    """What the check ran on: the interpreter, the libraries it found, the device and its peak."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    env: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           **{n: version(n) for n in ("torch", "transformers", "accelerate", "hydra-core",
                                                      "omegaconf", "deepspeed")},
                           "cuda": torch.version.cuda, "gpu": None,
                           "hydra_from": str(Path(importlib.util.find_spec("hydra").origin).parent.parent),
                           "deepspeed_import": deepspeed_import()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        peak, source = peak_tflops(torch.device("cuda", 0), None)
        env["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                      "multiprocessors": props.multi_processor_count, "peak_bf16_tflops": peak, "peak_source": source}
    return env


class Check:
    """The stages of one check and the JSON they fill, written after each."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out).resolve()
        self.deadline = Deadline(args.end_epoch_s or time.time() + args.budget_s)
        self.started = time.monotonic()
        self.on_gpu = torch.cuda.is_available()
        self.record: dict[str, Any] = {"ends_at_epoch_s": self.deadline.end, "environment": environment(), "stages": {},
                                       "not_measured": {}, "ok": True}
        self.model: Path | None = None
        self.world: Path | None = None

    def save(self) -> None:
        self.record["wall_s"] = time.monotonic() - self.started
        atomic_write_json(self.out / RESULT_NAME, self.record)

    def not_measured(self, what: str, why: str) -> None:
        self.record["not_measured"][what] = why
        print(f"-- not measured: {what}: {why}", flush=True)

    def fail(self, stage: str, why: str) -> None:
        self.record["ok"] = False
        self.record["stages"][stage] = {"status": "failed", "why": why}
        print(f"-- {stage} failed: {why}", flush=True)

    def starts(self, stage: str, need_s: float) -> bool:
        """Whether `stage` may start: at least `need_s` of the budget left (else it is recorded as not run)."""
        left = self.deadline.left()
        if left < need_s:
            self.not_measured(stage, f"{max(left, 0):.0f} s of the budget left, it needs about {need_s:.0f} s")
            return False
        print(f"== {stage} ({left:.0f} s left)", flush=True)
        return True

    def common(self, model_dir: Path, name: str, bf16: bool = True) -> list[str]:
        """The overrides every job of the check shares: bf16 over fp32 master weights, one process."""
        threads = 4 if self.on_gpu else 1
        return ["logger=none", "model.embedded=false", f"paths.embedded_dir={self.world}",
                f"model.path={model_dir}", f"model.name={name}", "model.dtype=float32",
                "model.gradient_checkpointing=false", f"train.bf16={str(bf16).lower()}",
                "train.logging_steps=1", "train.eval_steps=0", "train.global_batch_size=8",
                "train.per_device_batch_size=8", "train.eval_batch_size=32", "train.lr=1e-5",
                f"train.num_threads={threads}", f"paths.cache_dir={self.out / 'cache'}",
                "strategy.nproc_per_node=1", f"strategy.gpus_per_node={1 if self.on_gpu else 'null'}"]

    def job(self, stage: str, overrides: list[str], fresh: bool = True) -> Path | None:
        """Run one job to its end within the budget (`fresh`: in an emptied run directory, else resuming what is
        there); its run directory, or None (recorded) if it did not end ok."""
        run_dir = self.out / "runs" / stage
        if fresh:
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        log = self.out / f"{stage}.log"
        rc = run_module(["trainers.train", *overrides, f"run_dir={run_dir}"], log, self.deadline)
        if rc is None:
            self.not_measured(stage, "cut at the budget's end")
            return None
        if rc != 0 or not (run_dir / RESULT).exists():
            self.fail(stage, f"exit {rc}: {tail(log)}")
            return None
        return run_dir

    def stage_setup(self) -> bool:
        log = self.out / "setup.log"
        rc = run_module(["bench.gpu_check", "setup", str(self.out), self.args.shape, str(self.args.world_steps)],
                        log, self.deadline)
        if rc != 0:
            self.fail("setup", "cut at the budget's end" if rc is None else f"exit {rc}: {tail(log)}")
            return False
        done = json.loads(log.read_text().strip().splitlines()[-1])
        self.record["stages"]["setup"] = done
        self.model, self.world = Path(done["model"]), Path(done["world"])
        return True

    def stage_strategy(self, strategy: str) -> None:
        if strategy == "deepspeed_zero3" and self.record["environment"]["deepspeed_import"] != "ok":
            why = self.record["environment"]["deepspeed_import"]
            self.not_measured(f"job-{strategy}", f"deepspeed does not import: {why}")
            return
        # on a CPU the HF Trainer refuses bf16 under DeepSpeed (it would need use_cpu, which drops DeepSpeed)
        bf16 = self.on_gpu or strategy != "deepspeed_zero3"
        overrides = [*self.common(self.model, f"{self.args.shape}-shape", bf16), "method=minor_sft",
                     "method.beta=0.1", f"strategy={strategy}", f"train.max_steps={self.args.steps}"]
        run_dir = self.job(f"job-{strategy}", overrides)
        if run_dir:
            s = summary(run_dir, [*overrides, f"run_dir={run_dir}"])
            self.record["stages"][f"job-{strategy}"] = {"bf16": bf16, **s}
            if s["status"] != OK:
                self.fail(f"job-{strategy}", f"status {s['status']}: {s['error']}")
            if not self.on_gpu:
                self.not_measured(f"job-{strategy} MFU and GPU memory", "no GPU visible")

    def stage_first_m_theta(self) -> None:
        """Step-0 mθ per method, from the world's trained model: random weights give near-uniform logits,
        where a precision offset between the reference and the policy hardly shows."""
        out: dict[str, Any] = {}
        self.record["stages"]["first-m-theta"] = out
        methods = sorted(p.stem for p in METHODS_DIR.glob("*.yaml"))
        for method in sorted(methods, key=lambda m: m != "minor_sft"):  # the paper's method first
            if self.deadline.left() < 30:
                self.not_measured(f"first-m-theta {method}", "budget spent")
                continue
            overrides = [*self.common(self.world / "model", "embedded-trained"), f"method={method}",
                         f"strategy={self.args.sharded}", "train.max_steps=1"]
            run_dir = self.job(f"first-m-theta-{method}", overrides)
            value = first_m_theta(run_dir) if run_dir else None
            out[method] = value
            if value is not None and abs(value) > 1e-3:
                self.fail(f"first-m-theta {method}", f"m_theta {value:.3g} at step 1 (> 1e-3)")
                self.record["stages"]["first-m-theta"] = out
            self.save()

    def stage_resume(self) -> None:
        stage = "resume"
        overrides = [*self.common(self.model, f"{self.args.shape}-shape"), "method=minor_sft", "method.beta=0.1",
                     f"strategy={self.args.sharded}", f"train.max_steps={self.args.steps * 10}"]
        run_dir = self.out / "runs" / stage
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        log = self.out / "resume-killed.log"
        with open(log, "ab") as f:
            first = subprocess.Popen([sys.executable, "-m", "trainers.train", *overrides, f"run_dir={run_dir}"],
                                     stdout=f, stderr=subprocess.STDOUT)
        saved = request_save(run_dir, 2, self.deadline)
        kill_tree(first.pid)
        first.wait()
        if not isinstance(saved, int):
            self.fail(stage, f"{saved}: {tail(log)}") if self.deadline.left() > 0 else \
                self.not_measured(stage, f"cut at the budget's end: {saved}")
            return
        rerun = self.job(stage, overrides, fresh=False)
        if rerun:
            s = summary(rerun, [*overrides, f"run_dir={rerun}"])
            self.record["stages"][stage] = {"saved_at_step": saved, **s}
            if s["status"] != OK or s["resumed_from_step"] != saved:
                self.fail(stage, f"status {s['status']}, resumed from {s['resumed_from_step']} (saved {saved})")

    def stage_bench_gpu(self) -> None:
        device = ["--device", "cuda"] if self.on_gpu else ["--device", "cpu", "--seq-len", "64"]
        log = self.out / "bench-gpu.log"
        rc = run_module(["bench.gpu", *device, "--shape", self.args.shape, "--batch-sizes", self.args.bench_batches,
                         "--steps", "5", "--peer-reps", "0", "--out", str(self.out / "bench_gpu.json")],
                        log, self.deadline)
        if rc is None:
            self.not_measured("bench-gpu", "cut at the budget's end")
        elif rc != 0:
            self.fail("bench-gpu", f"exit {rc}: {tail(log)}")
        else:
            self.record["stages"]["bench-gpu"] = json.loads((self.out / "bench_gpu.json").read_text())["rows"]

    def run(self) -> bool:
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()
        if self.starts("setup", 60) and self.stage_setup():
            self.save()
            strategies = self.args.strategies
            if strategies and self.starts(f"job-{strategies[0]}", 90):
                self.stage_strategy(strategies[0])
            self.save()
            if self.starts("first-m-theta", 60):
                self.stage_first_m_theta()
            self.save()
            if self.starts("resume", 120):
                self.stage_resume()
            self.save()
            for strategy in strategies[1:]:
                if self.starts(f"job-{strategy}", 90):
                    self.stage_strategy(strategy)
                self.save()
        if self.starts("bench-gpu", 45):
            self.stage_bench_gpu()
        if not self.on_gpu:
            self.not_measured("GPU rows (MFU, peak memory against the plan)", "no GPU visible")
        self.save()
        return self.record["ok"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check run")
    p.add_argument("out", type=Path)
    p.add_argument("--budget-s", type=float, default=480.0, help="the check ends within this from its start")
    p.add_argument("--end-epoch-s", type=float, default=None,
                   help="the check's end as a Unix time (gpu_check.sh: its start + BUDGET_S); overrides --budget-s")
    p.add_argument("--strategies", nargs="+", default=["fsdp", "deepspeed_zero3"])
    p.add_argument("--sharded", default="fsdp", help="the strategy of the resume and first-step mθ stages")
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b")
    p.add_argument("--steps", type=int, default=20, help="training steps of each strategy's job")
    p.add_argument("--world-steps", type=int, default=300, help="pretraining steps of the check's embedded world")
    p.add_argument("--bench-batches", default="8,16", help="bench.gpu's batch sizes")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    commands = ("run", "setup", "summary")
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "run":
        check = Check(parse_args(args))
        ok = check.run()
        print(json.dumps(check.record, indent=2))
        print(f"written: {check.out / RESULT_NAME}")
        return 0 if ok else 1
    if command == "setup":
        out: Any = setup(Path(args[0]).resolve(), args[1], int(args[2]))
    else:
        out = summary(Path(args[0]), args[1:])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
