"""Through the real local SLURM (tests/local_slurm/start_cluster.sh): a 2-process grid point, and a running job
requeued as if preempted that comes back, resumes from its checkpoint and ends ok.

Only with SFTSWEEP_SLURM_TESTS=1 (the `slurm_cluster` fixture of conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_on_slurm
from local_slurm import slurm_snapshot
from trainers.runtime.run_dir import read_progress

pytestmark = pytest.mark.slow

ONE_POINT = ("~grid.methods.dpo_sft", "~grid.methods.minor_sft", "grid.methods.sft.lr=[1e-3]")


def sweep_cmd(world, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", "launcher=slurm", *ONE_POINT,
            "model.embedded=false", f"paths.embedded_dir={world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=none", "data.n_train=40", "data.n_eval=20",
            "train.num_threads=1", "hydra.sweeper.poll_interval_s=0.5", "hydra.launcher.timeout_min=10", *extra]


def only_result(tmp_path: Path) -> dict:
    (path,) = [p for p in (tmp_path / "sweep").rglob("result.json") if "_prepare" not in p.parts]
    return json.loads(path.read_text())


def test_two_process_grid_point_on_slurm(slurm_cluster, tiny_world, tmp_path):
    out = run_on_slurm(sweep_cmd(tiny_world, tmp_path, "strategy=ddp", "strategy.nproc_per_node=2",
                                 "strategy.cpus_per_node=2", "train.per_device_batch_size=16"), timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:] + slurm_snapshot()
    result = only_result(tmp_path)
    assert result["status"] == "ok" and result["world_size"] == 2 and result["strategy"] == "ddp"
    assert result["effective_batch"] == 32 and result["slurm_job_id"] is not None


def _running_job() -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True, timeout=30)
    ids = out.stdout.split()
    return ids[0] if ids else None


def requeue_mid_run(cmd: list[str], run_dir: Path, ready: Callable[[Path], bool], why: str,
                    requeue: Callable[[str], list[str]]) -> tuple[str, dict]:
    """Start the one-point sweep `cmd`; once `ready(run_dir)`, run `requeue(job)` on its running SLURM job
    and wait for the sweep to end; returns the job id and the point's result (asserting the sweep ended 0).

    slurmctld holds a requeued job for about two minutes (pending, reason BeginTime; 121 s and 126 s in
    this cluster's log) before it may start again. That hold is the cluster's policy, not what these tests
    are about, so once the job is pending again the test moves its start to now (`scontrol update
    StartTime=now`, as an operator could) and it comes back at once through the same requeue path."""
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 600
        while not ready(run_dir):
            assert sweep.poll() is None and time.monotonic() < deadline, why
            time.sleep(0.5)
        job = _running_job()
        assert job is not None
        sent = subprocess.run(requeue(job), capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 900
        while sweep.poll() is None and time.monotonic() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                                   timeout=30).stdout.split()
            if state == ["PENDING"]:  # requeued (it was running before)
                update = subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                                        capture_output=True, text=True, timeout=30)
                assert update.returncode == 0, update.stderr
                break
            time.sleep(0.5)
        stdout, stderr = sweep.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, stdout[-2000:] + stderr[-3000:] + slurm_snapshot()
    return job, only_result(run_dir.parents[2])


RUN_DIR = Path("sweep") / "sft" / "lr0.001_betaNone_seed0"


@pytest.mark.parametrize("logger", ["none", "wandb"])
def test_requeued_job_resumes_from_its_checkpoint(logger, slurm_cluster, tiny_world, tmp_path):
    """With W&B on, SLURM's SIGTERM before the requeue also ends W&B's service and the job fails on its next
    log: that failure must not be reported as the job's end, or the requeued job would never run."""
    cmd = sweep_cmd(tiny_world, tmp_path, "train.max_steps=400", "train.save_steps=20", "train.logging_steps=20",
                    "train.save_total_limit=2", f"logger={logger}")
    job, result = requeue_mid_run(
        cmd, tmp_path / RUN_DIR, lambda run: bool(list((run / "checkpoints").glob("checkpoint-*"))),
        "the job never saved a checkpoint", lambda job: ["scontrol", "requeue", job])
    assert result["status"] == "ok" and result["steps"] == 400
    assert result["resumed_from_step"] is not None and result["resumed_from_step"] > 0, result
    print(f"requeued SLURM job {job}: resumed from step {result['resumed_from_step']}, ended {result['status']}")


def test_two_process_job_warned_by_usr2_is_requeued_and_ends_ok(slurm_cluster, tiny_world, tmp_path):
    """SLURM's warning (SIGUSR2, as `--signal=USR2@…` sends it to every process of the job step) to a running
    2-process job: it saves, submitit requeues it, SLURM's SIGTERM reaches the torchrun agent (torch's own
    handler would raise there and the requeued job would be recorded as failed), and the job comes back,
    resumes from the saved step and ends ok with all its steps."""
    cmd = sweep_cmd(tiny_world, tmp_path, "strategy=ddp", "strategy.nproc_per_node=2", "strategy.cpus_per_node=2",
                    "train.per_device_batch_size=16", "train.max_steps=300", "train.save_steps=0",
                    "train.logging_steps=10")
    job, result = requeue_mid_run(
        cmd, tmp_path / RUN_DIR, lambda run: (read_progress(run) or {}).get("step", 0) >= 10,
        "the job never trained", lambda job: ["scancel", "--signal=USR2", job])
    assert (result["status"], result["steps"], result["world_size"]) == ("ok", 300, 2), result
    assert result["resumed_from_step"] is not None and 10 <= result["resumed_from_step"] < 300, result
    print(f"USR2 to SLURM job {job}: saved, requeued, resumed from step {result['resumed_from_step']}, ended ok")

