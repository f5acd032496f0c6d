"""A sweep directory has one owner and belongs to one experiment (sweep/ownership.py, sweep/identity.py).

The lock tests use a real second process that takes the lock and sleeps: a POSIX lock never conflicts
with its own process, so a second sweeper can only be played by another process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from sweep.identity import IDENTITY, claim, sweep_identity
from sweep.overrides import GRID_KEYS
from sweep.ownership import OWNER, SweepDirRefused, hold, holder, release
from trainers.job.config import compose_job

HOLD = ("import sys, time; from sweep.ownership import hold; hold(sys.argv[1]); print('held', flush=True); "
        "time.sleep(600)")


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding tmp_path/sweep, as a running sweeper does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "sweep")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def owned(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/sweep, given up by this process at the end of the test (a lock is otherwise held until exit)."""
    yield tmp_path / "sweep"
    release(tmp_path / "sweep")


def test_a_second_sweeper_is_refused_in_one_line_naming_the_holder(holder_process, owned):
    with pytest.raises(SweepDirRefused) as refused:
        hold(owned)
    message = str(refused.value)
    assert "\n" not in message
    assert f"host {socket.gethostname()}, pid {holder_process.pid}, since " in message
    assert f"kill {holder_process.pid}" in message
    assert holder(owned)["pid"] == holder_process.pid  # the refused one wrote nothing over the holder's record


def test_the_lock_of_a_sigkilled_sweeper_is_taken_over(holder_process, owned, capsys):
    holder_process.send_signal(signal.SIGKILL)
    holder_process.wait()
    previous = hold(owned)
    assert previous is not None and previous["pid"] == holder_process.pid  # its record outlived it; its lock did not
    assert holder(owned)["pid"] == os.getpid()
    assert f"took over {owned.resolve()} from a sweeper that ended without releasing it" in capsys.readouterr().out
    release(owned)
    assert not (owned / OWNER).exists()  # a sweeper that ends gives the directory up


def smoke(*overrides: str) -> dict:
    """The identity a grid sweeper of `experiment=smoke` records (the sweeper composes the same config)."""
    cfg = compose_job(["experiment=smoke", *overrides])
    settings = (cfg.grid.get("settings") or {}) if cfg.get("grid") else {}
    return sweep_identity(cfg, "grid", GRID_KEYS, grid_settings=settings)


def test_another_experiment_or_changed_settings_are_refused_and_a_larger_grid_is_not(tmp_path):
    claim(tmp_path, smoke())
    recorded = json.loads((tmp_path / IDENTITY).read_text())
    assert recorded["experiment"] == "smoke" and recorded["settings"]["train.max_steps"] == 10

    losses = compose_job(["experiment=losses"])
    with pytest.raises(SweepDirRefused, match="holds the grid sweep of experiment smoke; this is the grid sweep "
                                              "of experiment losses"):
        claim(tmp_path, sweep_identity(losses, "grid", GRID_KEYS))
    with pytest.raises(SweepDirRefused, match=r"run with train.max_steps=10; this sweep has train.max_steps=5") as e:
        claim(tmp_path, smoke("train.max_steps=5"))
    assert str(e.value).endswith(" hydra.sweeper.extend=true") and "\n" not in str(e.value)
    assert json.loads((tmp_path / IDENTITY).read_text()) == recorded  # a refusal writes nothing

    # more seeds, learning rates and methods, and how the jobs run, are the same sweep
    claim(tmp_path, smoke("grid.seeds=[0,1,2]", "grid.methods.sft.lr=[1e-4,1e-3,1e-2]", "launcher=joblib",
                          "train.num_threads=2", "logger=none", "+grid.refine={rounds:1}"))
    assert json.loads((tmp_path / IDENTITY).read_text()) == recorded

    # extend: the directory now holds the new settings; the one it replaced is kept
    claim(tmp_path, smoke("train.max_steps=5"), extend=True)
    extended = json.loads((tmp_path / IDENTITY).read_text())
    assert extended["settings"]["train.max_steps"] == 5 and extended["earlier"][0]["settings"]["train.max_steps"] == 10
    claim(tmp_path, smoke("train.max_steps=5"))


def test_a_grid_setting_may_be_added_but_not_changed(tmp_path):
    claim(tmp_path, smoke("+grid.settings={w0:['data.world_seed=0']}"))
    claim(tmp_path, smoke("+grid.settings={w0:['data.world_seed=0'],w1:['data.world_seed=1']}"))
    with pytest.raises(SweepDirRefused, match=r'grid.settings.w0=\["data.world_seed=0"\]; this sweep has '
                                              r'grid.settings.w0=\["data.world_seed=2"\]'):
        claim(tmp_path, smoke("+grid.settings={w0:['data.world_seed=2']}"))


def test_a_directory_from_before_the_record_is_judged_by_its_results_experiment(tmp_path):
    run_dir = tmp_path / "sft" / "lr0.001_betaNone_seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"status": "ok", "group": "smoke"}))
    with pytest.raises(SweepDirRefused, match="experiment smoke; this is the grid sweep of experiment losses"):
        claim(tmp_path, sweep_identity(compose_job(["experiment=losses"]), "grid", GRID_KEYS))
    claim(tmp_path, smoke())
    assert json.loads((tmp_path / IDENTITY).read_text())["experiment"] == "smoke"


@pytest.mark.slow
def test_grid_and_optuna_sweepers_on_a_held_directory_exit_2_in_one_line_and_write_nothing(holder_process, tmp_path):
    sweep_dir = tmp_path / "sweep"
    before = sorted(p.name for p in sweep_dir.iterdir())
    common = [f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"]
    for extra in (["launcher=local"], ["hparams_search=beta_optuna", "hydra.sweeper.n_trials=1"]):
        out = subprocess.run([sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", *common, *extra],
                             capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().splitlines()[-1].startswith(
            f"error: {sweep_dir} is in use by another sweeper (host {socket.gethostname()}, pid {holder_process.pid}, ")
        assert sorted(p.name for p in sweep_dir.iterdir()) == before
        assert not (tmp_path / "cache").exists()
