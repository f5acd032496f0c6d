"""Optuna search over β: the study continues across reruns, failures are told as FAIL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from conftest import REPO_ROOT
from trainers.runtime.run_dir import read_jsonl

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


def test_rerun_continues_the_same_journal_study_with_new_trials_told_their_selection_accuracy(tiny_world, tmp_path):
    """On journal:/// storage (the one for a shared filesystem): the rerun resumes the study, and each trial's
    value is its run's accuracy on the selection split, counted here from its predictions.jsonl. The sweep's plan
    and summary list every trial of both runs, as a grid's do (`make status`, the report's unfinished table)."""
    journal = tmp_path / "search" / "optuna.journal"
    storage = f"hydra.sweeper.storage=journal://{journal}"
    first = run_search(tiny_world, tmp_path, 3, storage)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 trials done, 3 to run" in first.stdout
    second = run_search(tiny_world, tmp_path, 5, storage)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "3 trials done, 2 to run" in second.stdout
    assert not (tmp_path / "search" / "optuna.db").exists()
    # a changed config is refused, not continued with the old trials: here, and from another directory on the
    # same journal (the study carries the identity of the search that made its trials)
    for where in (tmp_path / "search", tmp_path / "elsewhere"):
        changed = run_search(tiny_world, tmp_path, 6, storage, "train.max_steps=5", f"hydra.sweep.dir={where}")
        assert changed.returncode == 2, changed.stderr[-3000:]
        assert "run with train.max_steps=4; this sweep has train.max_steps=5" in changed.stderr.splitlines()[-1]
    assert not list((tmp_path / "elsewhere").rglob("result.json"))
    study = optuna.load_study(study_name="optuna_minor_sft",
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    betas = [t.params["method.beta"] for t in trials]
    assert len(trials) == 5 and len(set(betas)) == 5
    assert all(0.01 <= b <= 1.0 for b in betas)
    # every trial is an ordinary run directory; Optuna was told its selection-split accuracy
    run_dirs = {json.loads(p.read_text())["beta"]: p.parent for p in (tmp_path / "search").rglob("result.json")}
    assert sorted(run_dirs) == sorted(betas)
    select_ids = set()
    for trial in trials:
        predictions = read_jsonl(run_dirs[trial.params["method.beta"]] / "predictions.jsonl")
        select = {p["id"]: p["correct"] for p in predictions if p["split"] == "select"}
        assert len(predictions) == 20 and 0 < len(select) < 20  # data.n_eval=20, part of it the selection split
        select_ids.add(frozenset(select))
        assert trial.value == sum(select.values()) / len(select)
    assert len(select_ids) == 1  # every trial is scored on the same questions
    assert (tmp_path / "search" / "optimization_results.yaml").exists()
    plan = json.loads((tmp_path / "search" / "sweep_plan.json").read_text())["points"]
    assert sorted(tmp_path / "search" / p["run_dir"] for p in plan) == sorted(run_dirs.values())
    assert sorted(p["beta"] for p in plan) == sorted(betas)
    summary = json.loads((tmp_path / "search" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 5} and len(summary["points"]) == 5
    assert "[sweep] finished: 5 ok, 0 diverged, 0 failed, 0 missing of 5" in second.stdout
    status = subprocess.run([sys.executable, "-m", "sweep.status", str(tmp_path / "search")], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert status.stdout.strip().splitlines()[-1] == "5 points: 5 ok"


def test_diverged_trials_are_failed_trials_not_a_crash(tiny_world, tmp_path):
    out = run_search(tiny_world, tmp_path, 2, "train.lr=1e12", "train.max_grad_norm=0", "train.warmup_ratio=0")
    assert out.returncode == 1  # no trial completed
    assert "no trial completed" in out.stdout
    states = [t.state for t in load_study(tmp_path).trials]
    assert states == [optuna.trial.TrialState.FAIL] * 2
    summary = json.loads((tmp_path / "search" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"diverged": 2}


def test_beta_search_for_a_beta_free_method_is_refused_before_any_trial(tiny_world, tmp_path):
    out = run_search(tiny_world, tmp_path, 2, "method=sft")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: method=sft takes no β")
    assert not list(tmp_path.rglob("result.json"))


PRUNE_ALWAYS = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.01}"  # accuracy < 1.01


def test_a_pruner_stops_running_trials_from_their_intermediate_selection_accuracy(tiny_world, tmp_path):
    """A pruner that prunes every trial at its first report: each job is asked to stop while it trains, ends
    as pruned before max_steps, and the study has it PRUNED with the intermediate values its eval.jsonl holds."""
    out = run_search(tiny_world, tmp_path, 2, PRUNE_ALWAYS, "hydra.sweeper.poll_interval_s=0.1",
                     "train.max_steps=60", "train.eval_steps=2", "train.logging_steps=2")
    assert out.returncode == 1, out.stderr[-3000:]  # nothing completed: every trial was pruned
    assert "pruner ThresholdPruner" in out.stdout and "no trial completed" in out.stdout
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in trials:
        (result_path,) = [p for p in (tmp_path / "search").rglob("result.json")
                          if json.loads(p.read_text())["beta"] == trial.params["method.beta"]]
        result = json.loads(result_path.read_text())
        assert result["status"] == "pruned" and result["accuracy"] is None
        assert 2 <= result["steps"] < 60
        intermediate = {r["step"]: r["select_accuracy"] for r in read_jsonl(result_path.parent / "eval.jsonl")
                        if r["step"] > 0}
        assert trial.intermediate_values == intermediate and 2 in intermediate


def test_a_pruner_that_is_not_an_optuna_pruner_or_has_nothing_to_prune_by_is_refused_before_any_trial(
        tiny_world, tmp_path):
    out = run_search(tiny_world, tmp_path, 2, "hydra.sweeper.pruner={patience:3}")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "hydra.sweeper.pruner=" in out.stderr and "is not an Optuna pruner" in out.stderr
    out = run_search(tiny_world, tmp_path, 2, PRUNE_ALWAYS, "train.eval_steps=0")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: hydra.sweeper.pruner is set but train.eval_steps=0")
    assert not list(tmp_path.rglob("result.json"))


def test_the_samplers_config_builds_a_tpe_sampler_without_the_plugins_deprecation_warnings():
    """The plugin's TPE schema passes arguments Optuna deprecates (five FutureWarnings per search); the config's
    sampler target builds the same sampler without them, and leaves other warnings alone."""
    import warnings

    from hydra.utils import instantiate
    from hydra_plugins.hydra_optuna_sweeper.config import TPESamplerConfig
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO_ROOT / "conf" / "hparams_search" / "beta_optuna.yaml")
    sampler_cfg = OmegaConf.merge(OmegaConf.structured(TPESamplerConfig), conf.hydra.sweeper.sampler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = instantiate(sampler_cfg)
        warnings.warn("a user's own FutureWarning", FutureWarning, stacklevel=1)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert [str(w.message) for w in caught] == ["a user's own FutureWarning"]
