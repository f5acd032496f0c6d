"""The run-directory contract's types (trainers/runtime/run_dir.py): a run's status and a sweep's planned points,
checked against values written out by hand."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from sweep.grid import GridPoint, Setting
from sweep.progress import write_plan
from trainers.runtime.run_dir import PlannedPoint, RunStatus, read_planned_points, run_status

# status: (is_scored, ended_early, is_final), from docs/sweeps.md: ok and diverged score; stopped and pruned
# ended early on a sweeper's request; a rerun skips ok, stopped and pruned and runs failed and diverged again
TRUTH = {"ok": (True, False, True), "diverged": (True, False, False), "failed": (False, False, False),
         "stopped": (False, True, True), "pruned": (False, True, True)}


def test_each_status_scores_ends_early_and_is_final_as_the_docs_say():
    assert sorted(s.value for s in RunStatus) == sorted(TRUTH)
    for value, (scored, early, final) in TRUTH.items():
        s = RunStatus(value)
        assert (s.is_scored, s.ended_early, s.is_final) == (scored, early, final), value


def test_a_status_prints_compares_and_counts_as_the_string_result_json_holds():
    read_back = json.loads(json.dumps({"status": RunStatus.DIVERGED}))["status"]
    assert read_back == "diverged" and type(read_back) is str
    assert read_back == RunStatus.DIVERGED and f"{RunStatus.DIVERGED}" == str(RunStatus.DIVERGED) == "diverged"
    assert f"{RunStatus.OK:>4}|" == "  ok|"
    assert Counter(["ok", "ok", "failed"])[RunStatus.OK] == 2
    assert pd.Series(["ok", "pruned", "x"]).isin([RunStatus.OK, RunStatus.PRUNED]).tolist() == [True, True, False]
    assert run_status({"status": "pruned"}) is RunStatus.PRUNED
    assert run_status({"status": "exploded"}) is None and run_status({}) is None and run_status(None) is None


def test_a_plan_is_written_and_read_back_as_its_points(tmp_path):
    fin = Setting("fin", ("data.source=fineval",))
    points = [GridPoint("sft", 1e-3, None, 0), GridPoint("minor_sft", 2e-4, 0.1, 2, fin)]
    run_dirs = [tmp_path / "sft" / "a", tmp_path / "elsewhere" / "b"]
    write_plan(tmp_path / "sweep_plan.json", points, run_dirs)
    assert json.loads((tmp_path / "sweep_plan.json").read_text())["points"] == [
        {"method": "sft", "lr": 1e-3, "beta": None, "seed": 0, "label": "sft lr=0.001 seed=0", "run_dir": "sft/a"},
        {"method": "minor_sft", "lr": 2e-4, "beta": 0.1, "seed": 2, "label": "fin: minor_sft lr=0.0002 β=0.1 seed=2",
         "run_dir": "elsewhere/b", "setting": "fin"}]
    assert read_planned_points(tmp_path / "sweep_plan.json") == [
        PlannedPoint("sft", 1e-3, None, 0, "sft/a"), PlannedPoint("minor_sft", 2e-4, 0.1, 2, "elsewhere/b", "fin")]
    assert [p.label for p in read_planned_points(tmp_path / "sweep_plan.json")] == [p.label() for p in points]


def test_a_summary_entry_reads_as_its_point_and_a_malformed_one_is_named(tmp_path):
    summary = tmp_path / "sweep_summary.json"
    summary.write_text(json.dumps({"experiment": "e", "points": [
        {"method": "sft", "lr": 0.01, "beta": None, "seed": 1, "status": "failed", "error": "x", "run_dir": "/r"}]}))
    assert read_planned_points(summary) == [PlannedPoint("sft", 0.01, None, 1, "/r")]
    summary.write_text(json.dumps({"points": [{"method": "sft", "lr": "fast", "run_dir": "/r"}]}))
    with pytest.raises(ValueError, match="a planned point is malformed .*'fast'"):
        read_planned_points(summary)
    summary.write_text(json.dumps({"points": {"method": "sft"}}))
    with pytest.raises(ValueError, match="`points` is not a list"):
        read_planned_points(summary)
