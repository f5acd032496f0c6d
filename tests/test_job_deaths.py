"""A job that dies never ends the sweep: killed jobs (what the OOM killer does) are recorded as failed with
the signal, the other jobs finish, the summary and the report are written, the exit status is 1, and a
rerun runs the dead point and nothing else. Real processes, real signals; `sweep.status` reads the states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import REPO_ROOT, _process_tree
from sweep.status import point_status, render, sweep_status
from synthetic_runs import write_run
from trainers.runtime.run_dir import PlannedPoint, atomic_write_json, read_progress

pytestmark = pytest.mark.slow  # sweeps of real (tiny) training jobs

TWO_POINTS = ("~grid.methods.dpo_sft", "~grid.methods.minor_sft")  # sft at lr 1e-3 and 1e-2


def common(world, tmp_path: Path) -> list[str]:
    return ["model.embedded=false", f"paths.embedded_dir={world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
            "logger=none", "data.n_train=40", "data.n_eval=20", "train.num_threads=1", "train.logging_steps=5"]


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainers.train", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)


def kill_first_training_job(root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """SIGKILL the process of the first job seen training under `root` (as the OOM killer would);
    returns its run directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in sorted(root.rglob("progress.json")):
            progress = read_progress(path.parent) or {}
            if progress.get("phase") == "training" and (progress.get("step") or 0) >= 5:
                os.kill(progress["pid"], signal.SIGKILL)
                return path.parent
        time.sleep(0.2)
    raise AssertionError("no job reached its training steps")


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


@pytest.mark.parametrize("launcher, report_and_rerun", [
    pytest.param("joblib", False, id="joblib"), pytest.param("local", True, id="local"),
    pytest.param("submitit_local", False, id="submitit_local")])
def test_killed_job_is_failed_and_the_sweep_finishes(launcher, report_and_rerun, tiny_world, tmp_path):
    """Two jobs (in parallel with joblib, one after the other otherwise); the first seen training is killed.

    What differs by launcher is how the death is seen and recorded: the result files and the summary, checked
    on each. The report and the rerun read only those files (the same whatever the launcher, as checked), so
    they run once, after the local launcher's sweep (two launchers' report and rerun less: four Python starts
    and four jobs, prepare included)."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", f"launcher={launcher}", *TWO_POINTS, *common(tiny_world, tmp_path),
            "train.max_steps=40", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.poll_interval_s=0.5"]
    if launcher == "submitit_local":  # each of its jobs is a fresh Python: no prepare job, one Python start less;
        args.append("hydra.sweeper.prepare=false")  # the two jobs fill the caches themselves, under their lock
    proc = start(args)
    killed = kill_first_training_job(sweep_dir, proc)
    code, out, err = finish(proc)
    assert code == 1, out[-2000:] + err[-3000:]
    assert "[sweep] finished: 1 ok, 0 diverged, 1 failed, 0 missing of 2" in out
    result = json.loads((killed / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == "killed by signal 9 (SIGKILL: out of memory?)"
    (sibling,) = [p for p in sweep_dir.rglob("result.json") if p.parent != killed and "_prepare" not in p.parts]
    assert json.loads(sibling.read_text())["status"] == "ok" and json.loads(sibling.read_text())["steps"] == 40
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1}
    assert [p["error"] for p in summary["points"] if p["status"] == "failed"] == [result["error"]]
    if not report_and_rerun:
        return
    report = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep_dir), "--no-wandb"],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (sweep_dir / "report" / "report.html").is_file()

    rerun = subprocess.run([sys.executable, "-m", "trainers.train", *args], capture_output=True, text=True,
                           cwd=REPO_ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 grid points, 1 already done, 1 to run" in rerun.stdout
    assert json.loads((killed / "result.json").read_text())["status"] == "ok"


def test_killed_optuna_trial_is_failed_and_the_search_goes_on(tiny_world, tmp_path):
    search = tmp_path / "search"
    args = ["-m", "experiment=smoke", "hparams_search=beta_optuna", "method=minor_sft",
            "hydra.sweeper.n_trials=3", *common(tiny_world, tmp_path), "train.max_steps=100",
            f"hydra.sweep.dir={search}"]
    proc = start(args)
    killed = kill_first_training_job(search, proc)
    code, out, err = finish(proc)
    assert code == 0, out[-2000:] + err[-3000:]
    study = optuna.load_study(study_name="optuna_minor_sft", storage=f"sqlite:///{search / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert json.loads((killed / "result.json").read_text())["error"].startswith("killed by signal 9")


def test_status_names_every_state_of_a_sweep(tiny_world, tmp_path):
    """ok, diverged, failed from result files; pending from the plan; running from a live job; lost when
    the job's process is gone without a result."""
    sweep_dir = tmp_path / "sweep"
    write_run(sweep_dir / "a", method="sft", lr=1e-3, accuracy=0.6, n_questions=50)
    write_run(sweep_dir / "b", method="sft", lr=1e-1, status="diverged")
    write_run(sweep_dir / "c", method="sft", lr=3e-1, status="failed", error="SLURM: OUT_OF_MEMORY")
    live = sweep_dir / "live"
    plan = [("sft", 1e-3, None, sweep_dir / "a"), ("sft", 1e-1, None, sweep_dir / "b"),
            ("sft", 3e-1, None, sweep_dir / "c"), ("sft", 3e-4, None, sweep_dir / "d"), ("minor_sft", 1e-3, 0.1, live)]
    atomic_write_json(sweep_dir / "sweep_plan.json", {"points": [
        PlannedPoint(method, lr, beta, 0, str(d)).to_json() for method, lr, beta, d in plan]})
    job = start(["method=minor_sft", *common(tiny_world, tmp_path), "train.max_steps=100000", f"run_dir={live}",
                 f"paths.output_dir={tmp_path / 'outputs'}"])
    try:
        deadline = time.monotonic() + 300
        while ((read_progress(live) or {}).get("step") or 0) < 5:
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.2)
        states = {s.label: (s.state, s.detail) for s in sweep_status(sweep_dir)}
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert states["sft lr=0.001 seed=0"] == ("ok", "accuracy 0.600, 20 steps, 10s")
    assert states["sft lr=0.1 seed=0"][0] == "diverged"
    assert states["sft lr=0.3 seed=0"] == ("failed", "SLURM: OUT_OF_MEMORY")
    assert states["sft lr=0.0003 seed=0"] == ("pending", "")
    state, detail = states["minor_sft lr=0.001 β=0.1 seed=0"]
    assert state == "running" and "training, step " in detail and "/100000, loss " in detail and "ETA" in detail
    # the job is gone now and left no result: lost, not running
    assert point_status("minor_sft", live).state == "lost"
    screen = render(sweep_dir, sweep_status(sweep_dir))
    assert screen.splitlines()[-1] == "5 points: 1 pending, 1 lost, 1 failed, 1 diverged, 1 ok"


def test_cancelled_slurm_job_is_failed_and_the_sweep_finishes(slurm_cluster, tiny_world, tmp_path):
    """`scancel` of one running array task: recorded as cancelled, the other task's point ends ok, the
    sweeper writes its summary and exits 1 (the local cluster has no cgroups, so it cannot enforce a
    memory limit: the out-of-memory case is the SIGKILL of the joblib test above)."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "launcher=slurm", *TWO_POINTS, *common(tiny_world, tmp_path),
            "train.max_steps=300", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.poll_interval_s=0.5",
            "hydra.launcher.timeout_min=10"]
    proc = start(args)
    deadline, cancelled = time.monotonic() + 600, None
    while cancelled is None:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        for path in sorted(sweep_dir.rglob("progress.json")):
            progress = read_progress(path.parent) or {}
            if progress.get("phase") == "training" and progress.get("slurm_job_id"):
                subprocess.run(["scancel", progress["slurm_job_id"]], check=True, timeout=30)
                cancelled = path.parent
                break
        time.sleep(0.5)
    code, out, err = finish(proc, timeout=900)
    assert code == 1, out[-2000:] + err[-3000:]
    assert "[sweep] finished: 1 ok, 0 diverged, 1 failed, 0 missing of 2" in out
    result = json.loads((cancelled / "result.json").read_text())
    assert result["status"] == "failed" and result["error"].startswith("SLURM: CANCELLED"), result["error"]
    (sibling,) = [p for p in sweep_dir.rglob("result.json") if p.parent != cancelled and "_prepare" not in p.parts]
    assert json.loads(sibling.read_text())["status"] == "ok"
    assert json.loads((sweep_dir / "sweep_summary.json").read_text())["counts"] == {"ok": 1, "failed": 1}


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_dead_joblib_worker_loses_its_pool_and_the_sweep_records_it_and_goes_on(tiny_world, tmp_path):
    """SIGKILL of a joblib worker itself (not its job): loky ends the other worker with its job, the killed
    worker's job ends with its worker (it must not run on with nobody to collect it). The two are recorded
    failed with the pool's reason, the job that never started runs, exit 1. The two jobs meet at their first
    step (tests/fault_site's rendezvous), so both train at once however slowly the second worker starts."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "launcher=joblib", "~grid.methods.dpo_sft", "grid.methods.minor_sft.lr=[1e-3]",
            *common(tiny_world, tmp_path), "train.max_steps=60", f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.poll_interval_s=0.5"]
    proc = start(args, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"),
                            "SFTSWEEP_TEST_RENDEZVOUS": str(sweep_dir)})
    deadline = time.monotonic() + 300
    while True:  # both pool workers' jobs are training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        training = [read_progress(p.parent) or {} for p in sweep_dir.rglob("progress.json")]
        training = [p for p in training if p.get("phase") == "training" and (p.get("step") or 0) >= 5]
        if len(training) == 2:
            break
        time.sleep(0.2)
    worker = _parent(_parent(training[0]["pid"]))  # job runner <- its forkserver <- the joblib worker
    assert "loky" in Path(f"/proc/{worker}/cmdline").read_text()
    os.kill(worker, signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 1, out[-2000:] + err[-3000:]
    assert "[sweep] the launcher lost jobs: its joblib worker pool broke when a worker died" in out
    assert "[sweep] finished: 1 ok, 0 diverged, 2 failed, 0 missing of 3" in out, out
    by_point = {(r["method"], r["lr"]): r for r in (json.loads(p.read_text()) for p in sweep_dir.rglob("result.json"))
                if "method" in r}
    failed = [r for r in by_point.values() if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["error"].startswith("its joblib worker pool broke") for r in failed)
    assert by_point[("minor_sft", 1e-3)]["status"] == "ok"  # it had not started: launched again


def _wait_training(root: Path, proc: subprocess.Popen, key: str = "pid", timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        for path in sorted(root.rglob("progress.json")):
            progress = read_progress(path.parent) or {}
            if progress.get("phase") == "training" and progress.get(key):
                return progress
        time.sleep(0.2)


def test_sigterm_stops_the_sweeper_and_its_job_and_a_rerun_goes_on(tiny_world, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "launcher=local", *TWO_POINTS, *common(tiny_world, tmp_path),
            "train.max_steps=60", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.poll_interval_s=0.5"]
    proc = start(args)
    job = _wait_training(sweep_dir, proc)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=120)
    assert code == 130, out[-2000:] + err[-3000:]
    assert "[sweep] stopped: jobs that had not finished were stopped or cancelled" in err
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # the job went with the sweeper: nothing left behind
        os.kill(job["pid"], 0)
    rerun = subprocess.run([sys.executable, "-m", "trainers.train", *args], capture_output=True, text=True,
                           cwd=REPO_ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[sweep] finished: 2 ok, 0 diverged, 0 failed, 0 missing of 2" in rerun.stdout


def test_sigterm_of_the_sweeper_cancels_its_slurm_jobs(slurm_cluster, tiny_world, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "launcher=slurm", *TWO_POINTS, *common(tiny_world, tmp_path),
            "train.max_steps=2000", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.poll_interval_s=0.5",
            "hydra.launcher.timeout_min=10"]
    proc = start(args)
    job = _wait_training(sweep_dir, proc, key="slurm_job_id")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=300)
    assert code == 130, out[-2000:] + err[-3000:]
    assert "[sweep] stopped: cancelled 2 unfinished SLURM job(s): " in out and job["slurm_job_id"] in out
    deadline = time.monotonic() + 120
    while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.strip():
        assert time.monotonic() < deadline, "the cancelled jobs are still in the queue"
        time.sleep(1)


def _live(pids: list[int]) -> list[str]:
    """The processes of `pids` still running (a zombie has ended), each as "pid command"."""
    live = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            live.append(f"{pid} {command}")
    return live


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigkilled_joblib_sweeper_leaves_no_process_behind(tiny_world, tmp_path):
    """Two jobs training under joblib (2 loky workers, their job runners and forkservers, the resource
    trackers); SIGKILL of the sweeper: within 5 s none of its processes runs on (nor takes a queued job)."""
    sweep_dir, tree = tmp_path / "sweep", []
    proc = start(["-m", "experiment=smoke", "launcher=joblib", *TWO_POINTS, *common(tiny_world, tmp_path),
                  "train.max_steps=2000", f"hydra.sweep.dir={sweep_dir}"])
    try:
        deadline = time.monotonic() + 300
        while len([p for p in sweep_dir.rglob("progress.json") if (read_progress(p.parent) or {}).get("step")]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        tree = [pid for pid in _process_tree(proc.pid) if pid != proc.pid]
        assert len(_live(tree)) >= 6, _live(tree)  # 2 workers, 2 runners, 2 forkservers at least
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _live(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _live(tree) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for line in _live(tree):  # what a failed test left
            os.kill(int(line.split()[0]), signal.SIGKILL)
