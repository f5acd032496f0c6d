"""Optuna search over β: the study continues across reruns, failures are told as FAIL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # every test here runs an Optuna search of real (tiny) training jobs


def run_search(world, tmp_path: Path, n_trials: int, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", "hparams_search=beta_optuna",
        "method=minor_sft", f"hydra.sweeper.n_trials={n_trials}", "model.embedded=false",
        f"paths.embedded_dir={world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'search'}", "logger=none", "data.n_train=40", "data.n_eval=20",
        "train.num_threads=1", "train.max_steps=4", *extra,
    ]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)


def load_study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="optuna_minor_sft", storage=f"sqlite:///{tmp_path / 'search' / 'optuna.db'}")


def test_rerun_continues_the_same_study_with_new_trials(tiny_world, tmp_path):
    first = run_search(tiny_world, tmp_path, 3)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 trials done, 3 to run" in first.stdout
    second = run_search(tiny_world, tmp_path, 5)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "3 trials done, 2 to run" in second.stdout
    trials = load_study(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    betas = [t.params["method.beta"] for t in trials]
    assert len(trials) == 5 and len(set(betas)) == 5
    assert all(0.01 <= b <= 1.0 for b in betas)
    # every trial is an ordinary run directory, with the accuracy Optuna was told
    assert len(list((tmp_path / "search").rglob("result.json"))) == 5
    assert (tmp_path / "search" / "optimization_results.yaml").exists()


def test_diverged_trials_are_failed_trials_not_a_crash(tiny_world, tmp_path):
    out = run_search(tiny_world, tmp_path, 2, "train.lr=1e12", "train.max_grad_norm=0", "train.warmup_ratio=0")
    assert out.returncode == 1  # no trial completed
    assert "no trial completed" in out.stdout
    states = [t.state for t in load_study(tmp_path).trials]
    assert states == [optuna.trial.TrialState.FAIL] * 2


def test_beta_search_for_a_beta_free_method_is_refused_before_any_trial(tiny_world, tmp_path):
    out = run_search(tiny_world, tmp_path, 2, "method=sft")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: method=sft takes no β")
    assert not list(tmp_path.rglob("result.json"))
