"""A sweeper's stop request (run_dir.STOP_REQUEST) ends a running job at its next step boundary, as
`pruned` or `stopped`, on one process and on two (every rank after the same step); such a point is final."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sweep import run_sweep

from conftest import kill_job_tree
from sweep.status import point_status, render
from trainers.job.callbacks import RunDirCallback
from trainers.job.config import save_job_config
from trainers.recipe import run_job
from trainers.runtime.run_dir import (
    RESULT,
    STOP_REQUEST,
    atomic_write_json,
    is_done,
    read_jsonl,
    read_stop_request,
    request_stop,
    reset_logs,
    write_progress,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_stop_request_ends_the_job_after_the_next_step_with_its_last_intermediate_numbers(job_cfg, monkeypatch):
    """The request is written (as a sweeper would) when the step-3 evaluation is logged; the job ends after
    step 4, without a final evaluation or predictions, and never claims a final accuracy."""
    cfg = job_cfg("method=minor_sft", "method.beta=0.1", "train.max_steps=6", "train.eval_steps=3")
    run_dir = Path(cfg.run_dir)
    logged = RunDirCallback.on_evaluate

    def evaluate_then_request(self, args, state, control, metrics=None, **kwargs):
        logged(self, args, state, control, metrics=metrics, **kwargs)
        if state.global_step == 3:
            request_stop(run_dir, "pruned", "below the median at step 3")

    monkeypatch.setattr(RunDirCallback, "on_evaluate", evaluate_then_request)
    result = run_job(cfg)

    assert (result["status"], result["steps"], result["stop_reason"]) == ("pruned", 4, "below the median at step 3")
    assert result["accuracy"] is None and result["select_accuracy"] is None and result["report_accuracy"] is None
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 3]  # no evaluation at the step it stopped at
    assert result["last_eval"] == {k: evals[-1][k] for k in ("step", "accuracy", "select_accuracy", "m_theta")}
    assert 0 <= result["last_eval"]["select_accuracy"] <= 1
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")][-1] == 4
    assert not (run_dir / "predictions.jsonl").exists()
    assert json.loads((run_dir / RESULT).read_text())["status"] == "pruned"


def test_a_stopped_or_pruned_point_is_final_for_a_rerun_unless_asked(tmp_path):
    for status, done in (("ok", True), ("stopped", True), ("pruned", True), ("diverged", False), ("failed", False)):
        run_dir = tmp_path / status
        atomic_write_json(run_dir / RESULT, {"status": status, "config_hash": "h"})
        assert is_done(run_dir, "h") is done, status
        assert is_done(run_dir, "h", rerun_stopped=True) is (status == "ok"), status
        assert not is_done(run_dir, "another config")


def test_a_rerun_clears_the_stop_request_its_last_run_was_given(tmp_path):
    request_stop(tmp_path, "stopped", "past the threshold")
    assert read_stop_request(tmp_path)["status"] == "stopped"
    reset_logs(tmp_path, keep_until_step=None)
    assert not (tmp_path / STOP_REQUEST).exists() and read_stop_request(tmp_path) is None
    with pytest.raises(ValueError, match="stop request"):
        request_stop(tmp_path, "ok", "not a way to stop")


@pytest.mark.slow
def test_two_processes_asked_to_stop_from_outside_stop_after_the_same_step(job_cfg):
    """A real sweeper's timing: the request is written from another thread as soon as the first intermediate
    evaluation appears. Rank 0 alone reads the file; were the other rank not told, it would wait forever
    in the next step's collective (the timeout fails the test) or train on alone."""
    cfg = job_cfg("method=sft", "train.max_steps=60", "train.eval_steps=3", "train.logging_steps=1",
                  "train.global_batch_size=8", "train.per_device_batch_size=4", "strategy=ddp",
                  "strategy.nproc_per_node=2")
    run_dir = Path(cfg.run_dir)
    code = (f"from trainers.job.agent import launch\nfrom trainers.job.config import load_job_config\n"
            f"launch(load_job_config({str(save_job_config(cfg))!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, start_new_session=True,
                            env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})

    def request_at_first_eval() -> None:
        while proc.poll() is None:
            if any(e["step"] > 0 for e in read_jsonl(run_dir / "eval.jsonl")):
                request_stop(run_dir, "stopped", "past the threshold")
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=request_at_first_eval, daemon=True)
    watcher.start()
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        kill_job_tree(proc.pid)  # after a hang: the agent and the workers, which run in sessions of their own
        proc.wait()
    result = json.loads((run_dir / RESULT).read_text())
    assert (result["status"], result["world_size"], result["stop_reason"]) == ("stopped", 2, "past the threshold")
    assert 3 <= result["last_eval"]["step"] <= result["steps"] < 60
    assert read_jsonl(run_dir / "metrics.jsonl")[-1]["step"] == result["steps"]


def test_status_shows_a_stopped_point_by_its_last_intermediate_accuracy_and_a_pending_request(tmp_path):
    """`make status`: a pruned point is neither ok nor failed and shows where it got to, never a final accuracy;
    a running job whose stop request is written says so."""
    pruned, running = tmp_path / "pruned", tmp_path / "running"
    atomic_write_json(pruned / RESULT, {
        "method": "sft", "lr": 3e-3, "status": "pruned", "accuracy": None, "select_accuracy": None, "steps": 52,
        "stop_reason": "MedianPruner", "last_eval": {"step": 50, "accuracy": 0.41, "select_accuracy": 0.375}})
    write_progress(running, pid=os.getpid(), host=socket.gethostname(), started_at=time.time(), phase="training",
                   step=7, max_steps=150, loss=1.5)
    request_stop(running, "stopped", "past the threshold")
    states = {s.run_dir.name: (s.state, s.detail) for s in (point_status("p", pruned), point_status("r", running))}
    assert states["pruned"] == ("pruned", "at step 52, last accuracy 0.375 at step 50 (MedianPruner)")
    assert states["running"][0] == "running" and "asked to stop (stopped)" in states["running"][1]
    assert render(tmp_path, [point_status("p", pruned)]).splitlines()[-1] == "1 points: 1 pruned"


TWO_SFT_POINTS = ("~grid.methods.dpo_sft", "~grid.methods.minor_sft", "train.max_steps=2")  # sft at 1e-3, 1e-2


@pytest.mark.slow
def test_a_grid_rerun_skips_a_stopped_point_unless_asked_to_rerun_it(tiny_world, tmp_path):
    first = run_sweep(tiny_world, tmp_path, *TWO_SFT_POINTS)
    assert first.returncode == 0, first.stderr[-3000:]
    stopped = next((tmp_path / "sweep" / "sft").rglob("result.json"))
    stopped.write_text(json.dumps({**json.loads(stopped.read_text()), "status": "stopped", "accuracy": None}))
    again = run_sweep(tiny_world, tmp_path, *TWO_SFT_POINTS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 grid points, 2 already done, 0 to run" in again.stdout
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "stopped": 1}
    asked = run_sweep(tiny_world, tmp_path, *TWO_SFT_POINTS, "hydra.sweeper.rerun_stopped=true")
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "2 grid points, 1 already done, 1 to run" in asked.stdout
    assert json.loads(stopped.read_text())["status"] == "ok"
