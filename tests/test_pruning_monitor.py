"""The Optuna pruning monitor (sweep/pruning.py) on run directories whose intermediate selection accuracies are
known: the study's pruner decides, trial by trial, and only the trials it prunes are asked to stop."""

from __future__ import annotations

import optuna

from sweep.pruning import PruningMonitor
from trainers.runtime.run_dir import EVAL, PRUNED, append_jsonl, read_stop_request, write_progress


def _running_trial(run_dir, accuracies: dict[int, float]) -> None:
    run_dir.mkdir(parents=True)
    write_progress(run_dir, phase="training", step=max(accuracies), max_steps=100)
    for step, accuracy in accuracies.items():
        append_jsonl(run_dir / EVAL, {"step": step, "accuracy": None, "select_accuracy": accuracy, "n": 50})


def test_the_pruner_stops_the_trial_below_its_threshold_and_lets_the_other_run(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trials = [study.ask() for _ in range(2)]
    low, high = tmp_path / "low", tmp_path / "high"
    _running_trial(low, {10: 0.6, 20: 0.3})  # above the threshold at step 10, below it at step 20
    _running_trial(high, {10: 0.7, 20: 0.8})
    monitor = PruningMonitor(trials, [low, high], since=0.0, interval_s=60, prune=True)
    monitor.poll(decide=True)
    assert read_stop_request(high) is None
    request = read_stop_request(low)
    assert request is not None and request["status"] == PRUNED and "ThresholdPruner" in request["reason"]
    assert monitor.stop_requested == {trials[0].number: 20}
    # every logged value reached the study, the pruned trial's too
    assert [t.intermediate_values for t in study.get_trials(deepcopy=False)] == [{10: 0.6, 20: 0.3},
                                                                                 {10: 0.7, 20: 0.8}]


def test_without_a_decision_the_monitor_reports_and_stops_nothing(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    _running_trial(tmp_path / "low", {10: 0.1})
    monitor = PruningMonitor([trial], [tmp_path / "low"], since=0.0, interval_s=60, prune=True)
    monitor.finish()  # the last look after the launch: values reported, no stop asked
    assert read_stop_request(tmp_path / "low") is None and monitor.stop_requested == {}
    assert study.get_trials(deepcopy=False)[0].intermediate_values == {10: 0.1}
