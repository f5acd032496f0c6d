"""sweep.refine: bracket, then refine — its rounds on a known accuracy curve, its cost against a dense grid,
resuming, and one real refined sweep through Hydra whose output the report reads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import build_report
from conftest import REPO_ROOT
from sweep.grid import GridError, GridPoint, expand_grid
from sweep.refine import RefineSpec, peaks, plan_bracket_seeds, plan_round, refine, refine_spec

COARSE = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # the default half-decade grid
TRUE_PEAK = {"sft": 7e-4, "minor_sft": 2.2e-3}


def accuracy(p: GridPoint) -> float:
    """A smooth, noiseless curve in log lr peaking at TRUE_PEAK[method]; β 0.1 better than 0.5."""
    x = math.log10(p.lr) - math.log10(TRUE_PEAK[p.method])
    return 0.7 - 0.3 * x * x - (0.1 if p.beta == 0.5 else 0.0)


def simulate(spec: RefineSpec, grid: dict, done: dict | None = None):
    """Run the refinement against `accuracy`: launch "runs" a point by storing its score in `done`."""
    done = {} if done is None else done
    points = expand_grid(grid)
    launched: list[GridPoint] = []
    for p in points:
        if p not in done:
            done[p] = accuracy(p)
            launched.append(p)

    def launch(new, what):
        for p in new:
            if p not in done:
                done[p] = accuracy(p)
                launched.append(p)
        return [Path(f"/runs/{p.label()}") for p in new]

    run_dirs = [Path(f"/runs/{p.label()}") for p in points]
    log = refine(spec, points, run_dirs, [0], launch, scores_of=lambda pts, _: {p: done.get(p) for p in pts})
    return points, launched, log, done


GRID = {"seeds": [0], "methods": {"sft": {"lr": COARSE}, "minor_sft": {"lr": COARSE, "beta": [0.1, 0.5]}}}


def test_refine_spec_checks_its_fields():
    assert refine_spec({"methods": {}}) is None
    assert refine_spec({"refine": {"rounds": 3, "factor": 1.5, "seeds": [0, 1, 2]}}) == RefineSpec(3, 1.5, (0, 1, 2))
    for bad, field in (({"rounds": -1}, "rounds"), ({"factor": 1}, "factor"), ({"seeds": ["a"]}, "seeds"),
                       ({"steps": 2}, "unknown key")):
        with pytest.raises(GridError, match=field):
            refine_spec({"refine": bad})


def test_one_round_adds_midpoints_around_each_peak_on_the_grids_seeds():
    scores = {p: accuracy(p) for p in expand_grid(GRID)}
    pk = peaks(scores)
    assert (pk["sft"].lr, pk["sft"].below, pk["sft"].above) == (1e-3, 3e-4, 3e-3)
    assert (pk["minor_sft"].lr, pk["minor_sft"].beta) == (3e-3, 0.1)
    new = plan_round(scores, RefineSpec(1, 2.0, (0, 1, 2)), [0])
    # the midpoints, for the peak's β, on the grid's seed: the round compares like with like
    assert {(p.method, p.lr, p.beta, p.seed) for p in new} == {
        ("sft", 5.48e-4, None, 0), ("sft", 1.73e-3, None, 0),
        ("minor_sft", 1.73e-3, 0.1, 0), ("minor_sft", 5.48e-3, 0.1, 0)}


def test_seeds_go_where_the_threshold_is_decided():
    """After the round both peaks move to a midpoint (the curves peak at 7e-4 and 2.2e-3); the seeds then
    run at the peak and the lr on each side, every β that ran there."""
    spec = RefineSpec(1, 2.0, (0, 1, 2))
    scores = {p: accuracy(p) for p in expand_grid(GRID)}
    scores |= {p: accuracy(p) for p in plan_round(scores, spec, [0])}
    pk = peaks(scores)
    assert (pk["sft"].below, pk["sft"].lr, pk["sft"].above) == (3e-4, 5.48e-4, 1e-3)
    assert (pk["minor_sft"].below, pk["minor_sft"].lr, pk["minor_sft"].above) == (1e-3, 1.73e-3, 3e-3)
    new = plan_bracket_seeds(scores, spec, [0])
    assert {(p.method, p.lr, p.beta, p.seed) for p in new} == {
        (m, lr, b, s) for s in (1, 2) for m, lr, b in (
            ("sft", 3e-4, None), ("sft", 5.48e-4, None), ("sft", 1e-3, None),
            ("minor_sft", 1e-3, 0.1), ("minor_sft", 1e-3, 0.5), ("minor_sft", 1.73e-3, 0.1),
            ("minor_sft", 3e-3, 0.1), ("minor_sft", 3e-3, 0.5))}
    points, launched, log, done = simulate(spec, GRID)
    assert log[1] == {"bracket_seeds": len(new), "points": [p.label() for p in new]}
    assert len(launched) == 3 * 5 + 4 + len(new)  # the grid, the midpoints, the seeds; nothing twice
    for method, (lo, peak, hi) in log[-1]["final_brackets"].items():
        for lr in (lo, peak, hi):
            ran = {(p.beta, p.seed) for p in done if (p.method, p.lr) == (method, lr)}
            assert ran == {(b, s) for b, _ in ran for s in (0, 1, 2)}  # every β there on every seed


def test_each_setting_is_refined_around_its_own_peak():
    """Two worlds whose curves peak at different lrs: each world's midpoints and seeds go around its own peak,
    under its own setting, never around the other's (or a peak of the two pooled)."""
    shifted = {"world0": 1.0, "world1": 3.0}  # world1's curves peak three times higher
    grid = {**GRID, "settings": {name: [f"data.world_seed={i}"] for i, name in enumerate(shifted)}}
    scores = {}
    for p in expand_grid(grid):
        scores[p] = accuracy(GridPoint(p.method, p.lr / shifted[p.setting.name], p.beta, p.seed))
    pk = peaks(scores)
    assert sorted(pk) == ["world0/minor_sft", "world0/sft", "world1/minor_sft", "world1/sft"]
    assert (pk["world0/sft"].lr, pk["world1/sft"].lr) == (1e-3, 3e-3)
    new = plan_round(scores, RefineSpec(1, 2.0, (0, 1, 2)), [0])
    assert {(p.setting.name, p.method, p.lr) for p in new} == {
        ("world0", "sft", 5.48e-4), ("world0", "sft", 1.73e-3), ("world0", "minor_sft", 1.73e-3),
        ("world0", "minor_sft", 5.48e-3), ("world1", "sft", 1.73e-3), ("world1", "sft", 5.48e-3)}
    # world1's MinorSFT peaks on the grid's top edge: not refined there, whatever world0 does
    assert all(p.overrides()[0] == p.setting.overrides[0] for p in new)


def test_refinement_brackets_the_true_peak_at_half_the_cost_of_a_dense_grid():
    spec = RefineSpec(rounds=4, factor=1.5, seeds=None)
    points, launched, log, _ = simulate(spec, GRID)
    final = log[-1]
    assert all(final["settled"].values()), final
    for method, (lo, _, hi) in final["final_brackets"].items():
        assert lo < TRUE_PEAK[method] < hi and hi / lo <= 1.5
    # a dense grid with the finest spacing refinement reached, over the same range, every β, one seed
    finest = min(b / a for a, b in zip(sorted({p.lr for p in points}), sorted({p.lr for p in points})[1:],
                                        strict=False))
    span = math.log(COARSE[-1] / COARSE[0])
    dense = (math.ceil(span / math.log(finest)) + 1) * (1 + 2)  # sft + minor_sft's two β
    # the cheapest dense grid whose brackets (two spacings) meet the same target: spacing √factor
    target = (math.ceil(span / math.log(math.sqrt(spec.factor))) + 1) * (1 + 2)
    print(f"refinement: {len(launched)} jobs; dense grid at the finest spacing ({finest:.3f}): {dense} jobs "
          f"({len(launched) / dense:.2f}x); dense grid meeting bracket ≤ {spec.factor}: {target} jobs "
          f"({len(launched) / target:.2f}x)")
    assert len(launched) / target <= 0.5


def test_a_rerun_replays_the_rounds_and_launches_nothing():
    spec = RefineSpec(rounds=3, factor=1.5, seeds=(0, 1))
    _, first, log1, done = simulate(spec, GRID)
    _, second, log2, _ = simulate(spec, GRID, done=done)
    assert first and second == []
    assert log1 == log2


def test_edge_peak_is_not_refined():
    grid = {"seeds": [0], "methods": {"sft": {"lr": [1e-5, 3e-5, 1e-4]}}}  # TRUE_PEAK 7e-4: above the grid
    _, launched, log, _ = simulate(RefineSpec(2, 1.5, None), grid)
    assert len(launched) == 3 and log[0]["new_points"] == 0 and log[-1]["settled"] == {"sft": False}


@pytest.mark.slow
def test_refined_sweep_through_hydra_runs_the_midpoints_around_an_interior_peak_resumes_and_feeds_the_report(
        tiny_world, tmp_path):
    """A real sweep of tiny jobs with one refinement round; its output is what the report reads. The sweeper
    scores runs by a known curve peaking at lr 2e-3 (tests/fault_site: the tiny world's accuracies are chance
    and tie), so the coarse grid's peak is 1e-3, interior, and the round runs its two midpoints."""
    args = [
        sys.executable, "-m", "trainers.train", "-m", "experiment=smoke", "model.embedded=false",
        f"paths.embedded_dir={tiny_world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=none", "data.n_train=40", "data.n_eval=20",
        "train.num_threads=1", "hydra.sweeper.poll_interval_s=0.5", "~grid.methods.dpo_sft",
        "~grid.methods.minor_sft", "grid.methods.sft.lr=[1e-4,1e-3,1e-2,1e-1]",
        "+grid.refine={rounds:1,factor:2.0}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"), "SFTSWEEP_TEST_PEAK_LR": "2e-3"}
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    rounds = summary["refine"]
    assert rounds[0]["round"] == 1 and rounds[0]["brackets"] == {"sft": [1e-4, 1e-3, 1e-2]}
    assert rounds[0]["new_points"] == 2
    # the midpoints of the bracket, √(1e-4·1e-3) and √(1e-3·1e-2) to three digits, ran and finished
    assert sorted((p["lr"], p["status"]) for p in summary["points"]) == [
        (1e-4, "ok"), (3.16e-4, "ok"), (1e-3, "ok"), (3.16e-3, "ok"), (1e-2, "ok"), (1e-1, "ok")]
    assert "[sweep] refine, midpoints around the peaks: 2 points, 0 already done, 2 to run" in first.stdout
    again = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900, env=env)
    assert again.returncode == 0
    assert "4 grid points, 4 already done, 0 to run" in again.stdout
    assert "[sweep] refine, midpoints around the peaks: 2 points, 2 already done, 0 to run" in again.stdout
    rep = build_report(tmp_path / "sweep", use_wandb=False)
    th = rep.threshold.iloc[0]
    assert th["method"] == "SFT" and "report split" in th["ci_method"]
    unfinished = (rep.out_dir / "unfinished.csv").read_text().splitlines()
    finished = sum(1 for p in summary["points"] if p["status"] in ("ok", "diverged"))
    assert len(unfinished) - 1 == len(summary["points"]) - finished
