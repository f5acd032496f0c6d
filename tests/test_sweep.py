"""Sweeps through Hydra launchers on the tiny world: validation first, resume, failure isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_on_slurm
from local_slurm import slurm_snapshot
from trainers.runtime.run_dir import read_jsonl

pytestmark = pytest.mark.slow  # every test here runs a sweep of real (tiny) training jobs

SMOKE_POINTS = 5  # conf/experiment/smoke.yaml: sft ×2 lr, dpo_sft ×1, minor_sft ×2 lr


def sweep_args(world, tmp_path: Path, *extra: str) -> list[str]:
    """`python -m trainers.train -m experiment=smoke` on the tiny world, writing under tmp_path."""
    return [
        "-m", "experiment=smoke", "model.embedded=false", f"paths.embedded_dir={world.root}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=none",
        "data.n_train=40", "data.n_eval=20", "train.num_threads=1",
        "hydra.sweeper.poll_interval_s=0.5", *extra,
    ]


def run_sweep(world, tmp_path: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers.train", *sweep_args(world, tmp_path, *extra)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("result.json"))]


def test_smoke_sweep_runs_every_point_then_reruns_only_failed_or_changed_points(tiny_world, tmp_path):
    first = run_sweep(tiny_world, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    found = results(tmp_path / "sweep")
    assert len(found) == SMOKE_POINTS and {r["status"] for r in found} == {"ok"}
    assert sorted((r["method"], r["lr"]) for r in found) == [
        ("dpo_sft", 1e-3), ("minor_sft", 1e-3), ("minor_sft", 1e-2), ("sft", 1e-3), ("sft", 1e-2)]
    # prepared once: no job computed the tokenized data, the base scores or the reference pass itself
    assert {(r["tokenize_pass"], r["base_eval"], r["reference_pass"]) for r in found} == {("cached",) * 3}
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": SMOKE_POINTS}
    assert f"{SMOKE_POINTS} grid points, 0 already done, {SMOKE_POINTS} to run" in first.stdout
    assert f"[sweep] {SMOKE_POINTS}/{SMOKE_POINTS} done" in first.stdout

    # how a sweep runs and logs is not the experiment: another launcher, more threads and W&B rerun nothing
    how = [a for a in sweep_args(tiny_world, tmp_path, "launcher=joblib", "train.num_threads=2") if a != "logger=none"]
    again = subprocess.run(
        [sys.executable, "-m", "trainers.train", *how, "logger=wandb"], capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{SMOKE_POINTS} grid points, {SMOKE_POINTS} already done, 0 to run" in again.stdout
    # a failed point runs again, and only it
    failed = next((tmp_path / "sweep" / "sft").rglob("result.json"))
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "failed", "error": "RuntimeError: x"}))
    retry = run_sweep(tiny_world, tmp_path)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert f"{SMOKE_POINTS} grid points, {SMOKE_POINTS - 1} already done, 1 to run" in retry.stdout
    assert [r["status"] for r in results(tmp_path / "sweep")] == ["ok"] * SMOKE_POINTS
    # another experiment, or changed settings, are refused in one line before anything runs (sweep/identity.py)
    kept = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("result.json")}
    other = run_sweep(tiny_world, tmp_path, "experiment=losses")
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'sweep'} holds the grid sweep of experiment smoke; this is the grid sweep of experiment "
        "losses")
    changed = run_sweep(tiny_world, tmp_path, "train.max_steps=4")
    refusal = changed.stderr.strip().splitlines()[-1]
    assert changed.returncode == 2 and "run with train.max_steps=10; this sweep has train.max_steps=4" in refusal
    assert {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("result.json")} == kept
    # the command the refusal suggests, pasted, reruns every point with the new setting
    extended = subprocess.run(refusal.split("hydra.sweeper.extend=true: ", 1)[1], shell=True, capture_output=True,
                              text=True, cwd=REPO_ROOT, timeout=600)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert f"0 already done, {SMOKE_POINTS} to run" in extended.stdout
    assert {r["steps"] for r in results(tmp_path / "sweep")} == {4}


def test_bad_grid_entry_stops_before_anything_launches(tiny_world, tmp_path):
    out = run_sweep(tiny_world, tmp_path, "grid.methods.minor_sft.beta=[0.1,-1]")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: grid.methods.minor_sft.beta has -1; every value must be a number > 0")
    assert not (tmp_path / "sweep").exists() or not list((tmp_path / "sweep").rglob("result.json"))


def test_invalid_point_config_is_named_before_launch(tiny_world, tmp_path):
    out = run_sweep(tiny_world, tmp_path, "train.global_batch_size=30", "train.per_device_batch_size=8")
    assert out.returncode == 2
    assert "sft lr=0.001 seed=0: train.global_batch_size=30" in out.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_failing_and_diverging_jobs_are_recorded_and_the_rest_go_on(tiny_world, tmp_path):
    """dpo_sft raises (a fault injected into every process of the sweep), sft at lr 1e12 diverges, the others
    finish."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"), "SFTSWEEP_TEST_FAULT": "dpo_sft"}
    out = subprocess.run([sys.executable, "-m", "trainers.train",
                          *sweep_args(tiny_world, tmp_path, "grid.methods.sft.lr=[1e-3,1e12]", "train.max_grad_norm=0",
                                      "train.warmup_ratio=0")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=env)
    assert out.returncode == 1, out.stderr[-3000:]
    by_method = {(r["method"], r["lr"]): r["status"] for r in results(tmp_path / "sweep")}
    assert by_method == {("sft", 1e-3): "ok", ("sft", 1e12): "diverged", ("dpo_sft", 1e-3): "failed",
                         ("minor_sft", 1e-3): "ok", ("minor_sft", 1e-2): "ok"}
    failed = json.loads(next((tmp_path / "sweep" / "dpo_sft").rglob("result.json")).read_text())
    assert "dpo_sft exploded" in failed["error"]
    assert "[sweep] finished: 3 ok, 1 diverged, 1 failed, 0 missing of 5" in out.stdout


def test_killed_sweep_resumes_with_exactly_one_ok_result_per_point(tiny_world, tmp_path):
    """SIGKILL mid-sweep, rerun: only unfinished points run again and no result file is truncated."""
    args = [sys.executable, "-m", "trainers.train",
            *sweep_args(tiny_world, tmp_path, "train.max_steps=20", "train.logging_steps=5")]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and len(results(tmp_path / "sweep")) < 2:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(results(tmp_path / "sweep"))
    assert 2 <= done_before < SMOKE_POINTS, "the kill should land mid-sweep"

    rerun = run_sweep(tiny_world, tmp_path, "train.max_steps=20", "train.logging_steps=5")
    print(next(line for line in rerun.stdout.splitlines() if "already done" in line))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done_before} already done, {SMOKE_POINTS - done_before} to run" in rerun.stdout
    found = results(tmp_path / "sweep")  # json.loads of every result.json: none truncated
    assert len(found) == SMOKE_POINTS and all(r["status"] == "ok" for r in found)
    for run_dir in {p.parent for p in (tmp_path / "sweep").rglob("result.json")}:
        steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")]
        assert steps == sorted(set(steps)) and steps[-1] == 20  # the killed job's partial log was reset


def test_joblib_launcher_runs_two_jobs_at_once_in_different_processes(tiny_world, tmp_path):
    # A job waits at its first step until another one is training (tests/fault_site, SFTSWEEP_TEST_RENDEZVOUS),
    # so a second worker that starts slowly (its job runner imports torch) still meets a job of the first one;
    # jobs run one after another never meet, and the wait gives up after 300 s, saying so in the marker.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"),
           "SFTSWEEP_TEST_RENDEZVOUS": str(tmp_path / "sweep")}
    out = subprocess.run([sys.executable, "-m", "trainers.train",
                          *sweep_args(tiny_world, tmp_path, "launcher=joblib", "~grid.methods.dpo_sft",
                                      "~grid.methods.minor_sft", "train.max_steps=20", "train.logging_steps=5")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "sweep" / ".rendezvous").read_text() == "met"
    assert len(results(tmp_path / "sweep")) == 2  # sft at lr 1e-3 and 1e-2
    # each job's process and lifetime: progress.json's pid and start, result.json written at its end
    jobs = [(progress["pid"], progress["started_at"], (run_dir / "result.json").stat().st_mtime)
            for run_dir in {p.parent for p in (tmp_path / "sweep").rglob("result.json")}
            for progress in [json.loads((run_dir / "progress.json").read_text())]]
    assert len(jobs) == 2
    overlapping = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]
                   if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]
    assert overlapping, f"no two jobs ran at the same time: {sorted(jobs, key=lambda j: j[1])}"


def test_slurm_launcher_runs_every_point_through_sbatch(slurm_cluster, tiny_world, tmp_path):
    """The smoke grid on a real single-node SLURM (tests/local_slurm/start_cluster.sh) via submitit."""
    cmd = [sys.executable, "-m", "trainers.train",
           *sweep_args(tiny_world, tmp_path, "launcher=slurm", "hydra.launcher.timeout_min=10")]
    out = run_on_slurm(cmd, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:] + slurm_snapshot()
    found = results(tmp_path / "sweep")
    assert len(found) == SMOKE_POINTS and all(r["status"] == "ok" for r in found)
    job_ids = {r["slurm_job_id"] for r in found}
    assert None not in job_ids and len(job_ids) == SMOKE_POINTS
    # the controller's accounting saw each of them complete
    states = settled_accounting(job_ids)
    assert {j: states.get(j) for j in job_ids} == dict.fromkeys(job_ids, "COMPLETED"), states


def settled_accounting(job_ids: set[str], wait_s: float = 120.0) -> dict[str, str]:
    """sacct's state of each job once none is still running.

    A job's result (and submitit's pickle) is on disk before its batch script has exited, so the
    launcher can return while the controller still lists the last job as RUNNING for a moment.
    """
    arrays = sorted({j.split("_")[0] for j in job_ids})
    deadline = time.monotonic() + wait_s
    while True:
        accounted = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                                   capture_output=True, text=True, timeout=60)
        assert accounted.returncode == 0 and accounted.stdout.strip(), f"sacct did not answer: {accounted.stderr}"
        states = dict(line.split("|")[:2] for line in accounted.stdout.split())
        live = {j for j in job_ids if states.get(j) in (None, "PENDING", "RUNNING", "COMPLETING")}
        if not live or time.monotonic() > deadline:
            return states
        time.sleep(1)
