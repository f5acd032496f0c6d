"""Grid early stopping (sweep/early_stop.py): on synthetic curves whose truth is known, a clearly worse point
two lrs past its method's best is stopped, and no point the bracket or a claim needs is; bad settings are
refused in one line before any job starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_sweep import run_sweep, sweep_args

from conftest import REPO_ROOT
from sweep.early_stop import EarlyStopSpec, Eval, early_stop_spec, p_worse_by, to_stop
from sweep.early_stop_monitor import EarlyStopMonitor
from sweep.grid import GridError, GridPoint
from trainers.runtime.run_dir import EVAL, append_jsonl, read_stop_request, write_progress

SPEC = EarlyStopSpec(margin=0.1, confidence=0.95)
N = 400  # selection questions per evaluation


def curve(*accuracies: float) -> dict[int, Eval]:
    """Evaluations at steps 25, 50, …"""
    return {25 * (i + 1): Eval(a, N) for i, a in enumerate(accuracies)}


def sft(lr: float, seed: int = 0) -> GridPoint:
    return GridPoint("sft", lr, None, seed)


# best at 3e-4; 1e-3 its upper neighbour; 3e-3 and 1e-2 collapse
CURVES = {
    sft(1e-4): curve(0.60, 0.70),
    sft(3e-4): curve(0.75, 0.85),
    sft(1e-3): curve(0.45, 0.50),
    sft(3e-3): curve(0.30, 0.35),
    sft(1e-2): curve(0.25, 0.25),
}


def test_a_clearly_worse_point_two_lrs_above_the_best_is_stopped_with_its_reason():
    stopped = to_stop(CURVES, [sft(3e-3), sft(1e-2)], [], SPEC)
    assert set(stopped) == {sft(3e-3), sft(1e-2)}
    assert "step 50" in stopped[sft(3e-3)] and "lr=0.0003" in stopped[sft(3e-3)]


def test_points_below_the_best_or_its_upper_neighbour_are_never_stopped_however_bad():
    curves = {**CURVES, sft(1e-4): curve(0.10, 0.10), sft(1e-3): curve(0.05, 0.05)}
    assert to_stop(curves, [sft(1e-4), sft(3e-4), sft(1e-3)], [], SPEC) == {}


def test_a_point_whose_lower_neighbour_is_not_clearly_worse_is_not_stopped():
    """3e-3 is far below the best, but 1e-3 (the lr below it) is within the margin: no stop."""
    curves = {**CURVES, sft(1e-3): curve(0.75, 0.80)}
    assert to_stop(curves, [sft(3e-3)], [], SPEC) == {}
    assert sft(3e-3) in to_stop(curves, [sft(3e-3)], [sft(1e-3)], SPEC)  # unless the lr below was stopped


def test_a_point_within_the_margin_or_not_sure_enough_is_not_stopped():
    within = {**CURVES, sft(3e-3): curve(0.70, 0.78)}  # 0.07 below the best: inside margin 0.1
    assert to_stop(within, [sft(3e-3)], [], SPEC) == {}
    few = {p: {s: Eval(e.accuracy, 10) for s, e in c.items()} for p, c in CURVES.items()}  # 10 questions
    assert to_stop(few, [sft(3e-3)], [], EarlyStopSpec(margin=0.3, confidence=0.95)) == {}
    assert p_worse_by(Eval(0.35, 10), Eval(0.85, 10), 0.3) < 0.95 < p_worse_by(Eval(0.35, N), Eval(0.85, N), 0.3)


def test_points_are_compared_at_the_same_step_and_the_best_by_the_peak_rule():
    """At step 25 the point is fine; at step 50 it has fallen behind: it is judged at its latest step only
    against points that reached that step (a finished best's curve included)."""
    curves = {**CURVES, sft(3e-3): curve(0.74)}
    assert to_stop(curves, [sft(3e-3)], [], SPEC) == {}
    # the best is a seed mean: one lucky seed at 1e-3 (0.90) does not make 1e-3 the best (mean 0.70)
    seeded = {**CURVES, sft(1e-3, 1): curve(0.45, 0.90)}
    assert set(to_stop(seeded, [sft(3e-3)], [], SPEC)) == {sft(3e-3)}


def test_a_point_running_ahead_of_the_lr_below_it_is_judged_at_their_last_common_step():
    """Two jobs of one launch: 3e-3 has logged step 75, 1e-3 only step 50. At step 50 both are clearly
    past the best, so 3e-3 is stopped with the evidence of step 50, not left waiting for 1e-3 to catch up."""
    ahead = {**CURVES, sft(3e-3): curve(0.30, 0.35, 0.30)}
    stopped = to_stop(ahead, [sft(3e-3)], [], SPEC)
    assert set(stopped) == {sft(3e-3)} and "step 50" in stopped[sft(3e-3)]
    behind = {**CURVES, sft(1e-3): {}, sft(3e-3): curve(0.30, 0.35, 0.30)}  # the lr below has no evaluation yet
    assert to_stop(behind, [sft(3e-3)], [], SPEC) == {}


def test_other_methods_and_finished_points_are_not_candidates():
    other = {**CURVES, GridPoint("minor_sft", 3e-3, 0.1, 0): curve(0.10, 0.10)}
    assert to_stop(other, [GridPoint("minor_sft", 3e-3, 0.1, 0)], [], SPEC) == {}  # alone in its method
    assert to_stop(CURVES, [], [], SPEC) == {}


@pytest.mark.parametrize("setting, field", [
    ({"margin": -0.1}, "grid.early_stop.margin=-0.1"),
    ({"confidence": 1.0}, "grid.early_stop.confidence=1.0"),
    ({"confidence": 0}, "grid.early_stop.confidence=0"),
    ({"enabled": "yes"}, "grid.early_stop.enabled='yes'"),
    ({"margn": 0.1}, "unknown key(s) ['margn']"),
])
def test_bad_early_stop_settings_are_refused_naming_the_field(setting, field):
    with pytest.raises(GridError, match=r".*") as err:
        early_stop_spec({"early_stop": setting})
    assert field in str(err.value) and "\n" not in str(err.value)


def test_early_stop_is_off_unless_enabled():
    assert early_stop_spec({}) is None and early_stop_spec({"early_stop": {"enabled": False}}) is None
    assert early_stop_spec({"early_stop": {"enabled": True, "margin": 0.05}}) == EarlyStopSpec(0.05, 0.95)


def test_the_sweeper_refuses_early_stopping_without_evaluations_in_one_line_before_any_job(tiny_world, tmp_path):
    """smoke evaluates only at the end (train.eval_steps=0): nothing to stop by. (Bad margins and confidences
    go through the same parse as above, before this check.)"""
    done = run_sweep(tiny_world, tmp_path, "grid.early_stop.enabled=true", timeout=120)
    assert done.returncode == 2 and "grid.early_stop is enabled but train.eval_steps=0" in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not list((tmp_path / "sweep").rglob("result.json")) and not (tmp_path / "cache").exists()



@pytest.mark.slow
def test_the_sweeper_stops_the_point_past_the_threshold_and_runs_every_other_to_its_end(tiny_world, tmp_path):
    """Through the real grid sweeper (one job at a time): scripted selection accuracies 0.6, 0.8, 0.5, 0.2 at
    lr 1e-4 … 3e-3 (tests/fault_site). 3e-3 is two lrs past the best and 1e-3 is 0.3 below it with 400
    questions, so 3e-3 is stopped while it trains; 1e-3, the best's upper neighbour, runs to its end."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"),
           "SFTSWEEP_TEST_SELECT": "1e-4:0.6,3e-4:0.8,1e-3:0.5,3e-3:0.2", "SFTSWEEP_TEST_STEP_DELAY": "0.02"}
    args = sweep_args(tiny_world, tmp_path, "launcher=local", "~grid.methods.dpo_sft", "~grid.methods.minor_sft",
                      "grid.methods.sft.lr=[1e-4,3e-4,1e-3,3e-3]", "grid.early_stop.enabled=true",
                      "train.max_steps=40", "train.report_steps=5", "train.logging_steps=5")
    done = subprocess.run([sys.executable, "-m", "trainers.train", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = {r["lr"]: r for r in map(json.loads, map(lambda p: p.read_text(), (tmp_path / "sweep").rglob(
        "result.json"))) if "lr" in r}
    assert {lr: r["status"] for lr, r in results.items()} == {1e-4: "ok", 3e-4: "ok", 1e-3: "ok", 3e-3: "stopped"}
    assert results[3e-3]["steps"] < 40 and all(results[lr]["steps"] == 40 for lr in (1e-4, 3e-4, 1e-3))


def test_the_monitor_asks_a_running_condemned_point_to_stop_from_its_run_directory(tmp_path):
    """Real run directories as jobs leave them: eval.jsonl rows and progress.json. The best point finished
    before this launch (evidence, not a candidate); of the running points only 3e-3 is condemned, and its
    stop request is written; 1e-2 has finished its training (nothing to save) and is left alone."""
    points = list(CURVES)
    run_dirs = [tmp_path / f"lr{p.lr:g}" for p in points]
    for p, d in zip(points, run_dirs, strict=True):
        d.mkdir()
        for step, e in CURVES[p].items():
            append_jsonl(d / EVAL, {"step": step, "select_accuracy": e.accuracy, "select_n": e.n})
        done = p.lr == 1e-2
        write_progress(d, phase="evaluating" if done else "training", step=60 if done else 52, max_steps=60)
    monitor = EarlyStopMonitor(points, run_dirs, pending=[2, 3, 4], spec=SPEC, interval_s=60)
    monitor.poll()
    monitor.poll()
    asked = {p.lr: read_stop_request(d) for p, d in zip(points, run_dirs, strict=True)}
    assert {lr for lr, r in asked.items() if r} == {3e-3}
    assert asked[3e-3]["status"] == "stopped" and "step 50" in asked[3e-3]["reason"]
    assert list(monitor.requested) == [sft(3e-3)]



def minor(lr: float, beta: float, seed: int = 0) -> GridPoint:
    return GridPoint("minor_sft", lr, beta, seed)


def test_the_lr_below_counts_as_past_the_threshold_only_when_every_beta_there_is_clearly_worse():
    """At 1e-3 β 0.1 has collapsed but β 0.5 is still near the best: the lr below 3e-3 is not condemned as a
    whole, so 3e-3 runs on however bad it is (one good β there means the threshold may lie above 1e-3)."""
    curves = {
        minor(1e-4, 0.1): curve(0.60), minor(1e-4, 0.5): curve(0.55),
        minor(3e-4, 0.1): curve(0.85), minor(3e-4, 0.5): curve(0.80),
        minor(1e-3, 0.1): curve(0.40), minor(1e-3, 0.5): curve(0.82),
        minor(3e-3, 0.1): curve(0.20), minor(3e-3, 0.5): curve(0.20),
    }
    assert to_stop(curves, [minor(3e-3, 0.1), minor(3e-3, 0.5)], [], SPEC) == {}
    curves[minor(1e-3, 0.5)] = curve(0.45)  # now both βs at 1e-3 are clearly worse: 3e-3 stops
    assert set(to_stop(curves, [minor(3e-3, 0.1), minor(3e-3, 0.5)], [], SPEC)) == {minor(3e-3, 0.1),
                                                                                   minor(3e-3, 0.5)}


def test_the_best_points_seed_mean_counts_the_questions_of_every_seed():
    """Best: two seeds of 100 questions at 0.7; the point: 0.5 on 100. By hand, with 200 questions behind the
    best, P(best − point > 0.05) = Φ(0.15 / √(0.25/100 + 0.21/200)) = Φ(2.5175) = 0.9941 ≥ 0.99: stop. Counting
    one seed's 100 would give Φ(0.15 / √(0.25/100 + 0.21/100)) = Φ(2.2116) = 0.9865 < 0.99: no stop."""
    def at(accuracy: float) -> dict[int, Eval]:
        return {25: Eval(accuracy, 100)}

    curves = {sft(1e-4): at(0.6), sft(3e-4, 0): at(0.7), sft(3e-4, 1): at(0.7), sft(1e-3): at(0.4), sft(3e-3): at(0.5)}
    stopped = to_stop(curves, [sft(3e-3)], [sft(1e-3)], EarlyStopSpec(margin=0.05, confidence=0.99))
    assert list(stopped) == [sft(3e-3)] and "with probability 0.994" in stopped[sft(3e-3)]
