"""The report on runs a sweeper stopped early (status stopped/pruned): neither ok nor failed, counted as
such, never scored a full-length accuracy they did not reach."""

from __future__ import annotations

import json
import math

import pytest

from analysis import tables as T
from analysis.claims import UNDECIDED, _threshold_claim
from analysis.estimate import estimate
from analysis.planned import read_plan, unfinished
from analysis.rundirs import load_sweep
from synthetic_runs import run_name, write_run

N = 200


def write_cells(root, cells: dict, last_select_accuracy: float) -> None:
    """SFT runs per lr, one per seed: an accuracy (ok) or a status (stopped at step 8 with its last accuracy)."""
    for lr, outcomes in cells.items():
        for seed, v in enumerate(outcomes):
            outcome = ({"status": v, "steps": 8, "last_select_accuracy": last_select_accuracy} if isinstance(v, str)
                       else {"accuracy": v})
            write_run(root / run_name("sft", lr, None, seed), method="sft", lr=lr, seed=seed, base_accuracy=0.2,
                      n_questions=N, **outcome)


def test_stopped_and_pruned_runs_are_loaded_counted_and_never_scored(tmp_path):
    cells = {1e-4: [0.30], 1e-3: [0.60, "pruned"], 1e-2: ["stopped"]}
    write_cells(tmp_path, cells, last_select_accuracy=0.25)
    sweep = load_sweep(tmp_path)
    assert sweep.problems == [] and len(sweep.runs) == 4
    stopped = sweep.runs[sweep.runs["status"].isin(["stopped", "pruned"])]
    assert len(stopped) == 2 and stopped["accuracy"].isna().all()

    est = estimate(sweep, n_resamples=200)
    mid = est.point("world", "sft", 1e-3, math.nan)
    assert mid["accuracy"] == pytest.approx(0.60)  # the pruned seed is not scored (nor scored as the base model)
    assert (mid["n_runs"], mid["n_ok"], mid["n_stopped"], mid["n_failed"], mid["n_scored"]) == (2, 1, 1, 0, 1)
    row = T.accuracy_grids(est)["world"].set_index("method").loc["SFT"]
    assert row[1e-3] == "0.600 (1/2 stopped early, not scored)"
    assert row[1e-2] == "stopped early at step 8 (0.250 then; no final accuracy)"
    note = T.threshold_table(est, sweep).set_index("method").loc["SFT", "note"]
    assert "stopped early by the sweeper as past the threshold: lr 1e-2 at step 8 (selection accuracy 0.250 then)" \
        in note and "failed" not in note
    div = T.divergence_table(est).set_index("lr")
    assert div.loc[1e-2, "n_stopped"] == 1 and math.isnan(div.loc[1e-2, "divergence_rate"])  # not ended, not diverged
    assert div.loc[1e-3, "divergence_rate"] == 0.0

    (tmp_path / "sweep_summary.json").write_text(json.dumps({"experiment": "t", "points": [
        {"method": "sft", "lr": lr, "beta": None, "seed": s, "status": "x", "run_dir": "d"}
        for lr, outcomes in cells.items() for s in range(len(outcomes))]}))
    u = unfinished(read_plan(tmp_path)[0], sweep.runs)
    assert list(zip(u["lr"], u["seed"], u["status"], strict=True)) == [(1e-3, 1, "pruned"), (1e-2, 0, "stopped")]


def test_a_stopped_lr_above_the_peak_closes_the_bracket_but_measures_no_drop(tmp_path):
    """The sweeper stops only points clearly past the threshold: a stopped lr above the highest scored one
    brackets the peak (no "extend the grid up"), yet the threshold claim has no full-length drop to test."""
    cells = {1e-4: [0.30, 0.32], 1e-3: [0.60, 0.62], 1e-2: ["stopped", "stopped"]}
    write_cells(tmp_path, cells, last_select_accuracy=0.1)
    sweep = load_sweep(tmp_path)
    est = estimate(sweep, n_resamples=200)
    peak = est.peaks[("world", "sft")]
    assert (peak.lr, peak.bracket_low, peak.bracket_high, peak.bracket) == (1e-3, 1e-4, 1e-2, "")
    assert peak.next_pid is None  # nothing scored above: no accuracy to compare the peak with
    assert est.curves[("world", "sft")].set_index("lr").loc[1e-2, "status"] == "stopped"
    row = T.threshold_table(est, sweep).set_index("method").loc["SFT"]
    assert (row["bracketed"], row["bracket_high"]) == ("yes", 1e-2)
    claim = _threshold_claim(est, "world", "sft")
    assert claim["outcome"] == UNDECIDED
    assert claim["evidence"].startswith("the next lr 1e-2 was stopped early by the sweeper")
    assert "1e-2: stopped at step 8 (0.100 then)" in claim["evidence"]
