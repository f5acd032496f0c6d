"""Checkpoints serve resume and nothing else: an ok job leaves none, a model is kept only when exported
(`train.save_model=bf16`), and the scheduler's warning (SIGUSR2) gets a checkpoint that the requeued job
resumes from. Real jobs on the tiny world; the warning is a real signal to a real submitit job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO_ROOT, _process_tree
from trainers.job.prepare import load_model
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_progress


def test_ok_job_leaves_no_checkpoint_and_its_bf16_export_loads(job_cfg):
    cfg = job_cfg("method=sft", "train.save_steps=2", "train.save_model=bf16")
    result = run_job(cfg)
    run_dir = Path(cfg.run_dir)
    assert result["status"] == "ok" and result["steps"] == 6
    assert not list(run_dir.rglob("checkpoint-*"))  # saved at steps 2, 4, 6; deleted at the ok end

    exported = AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype="auto")
    assert {p.dtype for p in exported.parameters()} == {torch.bfloat16}
    assert list(run_dir.joinpath("model").glob("*.safetensors"))
    base = dict(load_model(cfg).named_parameters())
    trained = dict(exported.named_parameters())
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[k], base[k].to(torch.bfloat16)) for k in base)  # the trained weights
    assert AutoTokenizer.from_pretrained(run_dir / "model").vocab_size > 0

    # kept when asked; and a checkpoint per step when every_min is shorter than a step (no save_steps)
    kept = job_cfg("method=sft", "train.save_steps=0", "train.checkpoint_every_min=1e-9",
                   "train.keep_checkpoints=true", "train.save_total_limit=null", run="kept")
    assert run_job(kept)["status"] == "ok"
    saved = sorted(int(p.name.split("-")[1]) for p in (Path(kept.run_dir) / "checkpoints").iterdir())
    assert saved == [1, 2, 3, 4, 5, 6]


def _submitit_task(root: int, timeout: float = 60) -> int:
    """The pid of the submitit task (the Hydra job's process) under the sweep process `root`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _process_tree(root):
            try:
                if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError("no submitit task found")


@pytest.mark.slow
def test_scheduler_warning_saves_a_checkpoint_and_the_requeued_job_resumes_from_it(tiny_world, tmp_path):
    """SIGUSR2 (SLURM's time-limit / preemption warning) to every process of a running submitit job with no
    periodic checkpoints: it saves at the next step, is requeued (submitit-local requeues like SLURM), resumes
    there, ends ok."""
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", "launcher=submitit_local",
           "~grid.methods.dpo_sft", "~grid.methods.minor_sft", "grid.methods.sft.lr=[1e-3]",
           "model.embedded=false", f"paths.embedded_dir={tiny_world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
           f"hydra.sweep.dir={sweep_dir}", "logger=none", "data.n_train=40", "data.n_eval=20",
           "train.num_threads=1", "train.max_steps=60", "train.logging_steps=10", "train.save_steps=0",
           "hydra.sweeper.prepare=false"]  # one point: the job prepares its caches itself, one submitit process less
    sweep = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    run_dir = sweep_dir / "sft" / "lr0.001_betaNone_seed0"
    try:
        deadline = time.monotonic() + 300
        while (read_progress(run_dir) or {}).get("step", 0) < 10:
            assert sweep.poll() is None and time.monotonic() < deadline, "the job never trained"
            time.sleep(0.2)
        for pid in _process_tree(_submitit_task(sweep.pid)):  # as SLURM signals every process of the job
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
        stdout, stderr = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
    assert sweep.returncode == 0, stdout[-2000:] + stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["status"], result["steps"]) == ("ok", 60)
    assert 10 <= result["resumed_from_step"] < 60, result
    assert not (run_dir / "checkpoints").exists()
    print(f"warned at step >= 10: saved and resumed from step {result['resumed_from_step']}, ended ok at 60")
