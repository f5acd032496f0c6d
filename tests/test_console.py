"""What a user sees: a sweep prints one line per job plus its own progress and summary, never the
Trainer's per-step log dicts (they are in metrics.jsonl and W&B); a job run by hand shows tqdm's bar."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep import SMOKE_POINTS, run_sweep

from conftest import REPO_ROOT
from trainers.job.console import show_progress_bar

# Hydra's launcher line (a job's start), a job's end line, the sweeper's own lines, and the embedded
# world's build log (the prepare job may build it for minutes; silence would look like a hang).
SWEEP_LINE = re.compile(
    r"^(\[sweep\] .*"
    r"|\[[-0-9 :,]+\]\[HYDRA\] .*"
    r"|\S+-lr[0-9.e+-]+(-b[0-9.e+-]+)?-s\d+: (ok|diverged|failed), base accuracy .*"
    r"|\[[-0-9 :,]+\]\[trainers\.world\.[a-z]+\]\[INFO\] - .*)$"
)


def _job(world, tmp_path: Path, output: str, *extra: str) -> subprocess.CompletedProcess:
    """A 4-step job by hand; the jobs of one test share their cache (tokenized data, base scores)."""
    return subprocess.run(
        [sys.executable, "-m", "trainers.train", "method=sft", "logger=none", "model.embedded=false",
         f"paths.embedded_dir={world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"paths.output_dir={tmp_path / output}", "data.n_train=40", "data.n_eval=20", "train.max_steps=4",
         "train.logging_steps=1", "train.global_batch_size=8", "train.per_device_batch_size=8", "train.eval_steps=0",
         "train.num_threads=1", *extra],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )


@pytest.mark.slow
def test_sweep_prints_one_line_per_job_and_no_step_logs(tiny_world, tmp_path, monkeypatch):
    # a user who has not exported WANDB_MODE (the suite sets it offline; transformers then prints
    # "[INFO] Running in WANDB offline mode" when it loads its integrations, in every process)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = run_sweep(tiny_world, tmp_path, "train.logging_steps=1")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    stray = [ln for ln in lines if not SWEEP_LINE.match(ln)]
    assert not stray, stray[:10]
    assert sum(bool(re.match(r"\S+-lr.*: ok, base accuracy", ln)) for ln in lines) == SMOKE_POINTS
    assert sum("[HYDRA] \t#" in ln and "prepare_only" not in ln for ln in lines) == SMOKE_POINTS
    assert any(ln.startswith(f"[sweep] {SMOKE_POINTS}/{SMOKE_POINTS} done") for ln in lines)
    # the step logs went where they belong
    assert all(len((p.parent / "metrics.jsonl").read_text().splitlines()) >= 4
               for p in (tmp_path / "sweep").rglob("result.json"))


@pytest.mark.slow
def test_job_by_hand_shows_a_progress_bar_unless_told_otherwise(tiny_world, tmp_path):
    shown = _job(tiny_world, tmp_path, "shown")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "4/4 [" in shown.stderr  # tqdm's bar through the Trainer
    hidden = _job(tiny_world, tmp_path, "hidden", "train.progress_bar=false")
    assert hidden.returncode == 0, hidden.stderr[-2000:]
    assert "4/4 [" not in hidden.stderr
    # without the bar the Trainer would print its raw log dicts instead (PrinterCallback): not here
    assert "{'loss'" not in hidden.stdout + hidden.stderr and "'grad_norm'" not in hidden.stdout + hidden.stderr
    assert all("sft-lr0.001-s0: ok, base accuracy" in out.stdout for out in (shown, hidden))


def test_jobs_composed_in_code_show_no_bar_unless_asked(job_cfg):
    assert show_progress_bar(job_cfg()) is False
    assert show_progress_bar(job_cfg("train.progress_bar=true")) is True
