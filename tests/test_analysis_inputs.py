"""analysis.inputs: a setting is what its runs ran on, and no run is counted twice (issue 32's measured cases)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from analysis.estimate import estimate
from analysis.rundirs import load_sweeps
from synthetic_runs import run_name, write_run

N = 200
RESAMPLES = 200
LRS = (1e-4, 1e-3, 1e-2)


def sweep_dir(root, *, base: float = 0.25, fingerprints: dict[str, str] | None = None, shift: float = 0.0):
    """A default-like sweep: SFT and MinorSFT over three lrs, three seeds, both peaking at 1e-3 (seeds 0.02 apart),
    all under the one setting name "embedded"."""
    for method, beta, peak in (("sft", None, 0.50), ("minor_sft", 0.1, 0.56)):
        for lr, acc in zip(LRS, (0.30, peak, 0.20), strict=True):
            for seed in range(3):
                write_run(root / run_name(method, lr, beta, seed), method=method, lr=lr, beta=beta, seed=seed,
                          accuracy=acc + shift + 0.02 * (seed - 1), n_questions=N, dataset="embedded",
                          base_accuracy=base, split=True, fingerprints=fingerprints)
    return root


def prints(data: str, model: str = "m0") -> dict[str, str]:
    return {"data_fingerprint": data * 64, "tokenizer_fingerprint": "t" * 64, "model_fingerprint": model * 64}


def test_three_directories_of_different_data_under_one_name_are_three_settings(tmp_path):
    dirs = [sweep_dir(tmp_path / f"d{i}", fingerprints=prints(c)) for i, c in enumerate("abc")]
    sweep = load_sweeps(dirs)
    settings = sorted(sweep.runs["setting"].unique())
    assert len(settings) == 3 and all(s.startswith("embedded [") for s in settings)  # old: one "embedded"
    e = estimate(sweep, n_resamples=RESAMPLES)
    assert set(e.points["n_runs"]) == {3}  # old: 9 "seeds" per point, three data sets pooled
    for d in dirs:  # each directory is exactly one setting
        assert sweep.runs.loc[sweep.runs["source"] == str(d), "setting"].nunique() == 1
    split = [n for n in sweep.notes if n.startswith("embedded: runs under this name ran on different inputs")]
    assert len(split) == 1 and all(str(d) in split[0] for d in dirs) and "data aaaaaa" in split[0]


def test_older_runs_of_three_worlds_are_told_apart_by_their_base_accuracy(tmp_path):
    """The issue's three default sweeps of three worlds, written before fingerprints: base 0.328, 0.297, 0.256."""
    dirs = [sweep_dir(tmp_path / f"d{i}", base=b) for i, b in enumerate((0.328, 0.297, 0.256))]
    sweep = load_sweeps(dirs)
    assert sorted(sweep.runs["setting"].unique()) == [
        "embedded [base 0.256]", "embedded [base 0.297]", "embedded [base 0.328]"]
    assert set(estimate(sweep, n_resamples=RESAMPLES).points["n_runs"]) == {3}
    assert any(n.startswith("Runs without content fingerprints") for n in sweep.notes)


def test_runs_with_and_without_fingerprints_are_never_pooled_on_a_name_alone(tmp_path):
    sweep = load_sweeps([sweep_dir(tmp_path / "new", fingerprints=prints("a")), sweep_dir(tmp_path / "old")])
    assert sweep.runs["setting"].nunique() == 2


@pytest.mark.parametrize("fingerprints", [None, prints("a")], ids=["older runs", "fingerprinted"])
def test_a_directory_and_its_copy_count_as_the_directory_alone(tmp_path, fingerprints):
    """The issue's measured case: a sweep and its byte copy read together gave 6 seeds instead of 3."""
    alone = sweep_dir(tmp_path / "sweep", fingerprints=fingerprints)
    copy = shutil.copytree(alone, tmp_path / "sweep_copy")
    one, both = (estimate(s, n_resamples=RESAMPLES) for s in (load_sweeps([alone]), load_sweeps([alone, copy])))
    assert set(both.points["n_runs"]) == {3}  # old: 6
    numbers = ["n_runs", "n_scored", "accuracy", "report_accuracy", "ci_low", "ci_high", "seed_sd"]
    assert both.points[numbers].equals(one.points[numbers])
    for key, peak in one.peaks.items():
        assert (both.peaks[key].lr, both.peaks[key].p_argmax) == (peak.lr, peak.p_argmax)
        assert np.array_equal(both.vertex_b[key], one.vertex_b[key])
    note = [n for n in load_sweeps([alone, copy]).notes if "read more than once" in n]
    assert note == [f"embedded: 18 run(s) read more than once (the same point, seed, inputs and results) counted "
                    f"once; repeated in {alone} and {copy}."]


def test_one_seed_with_two_results_is_a_conflict_never_two_seeds(tmp_path):
    a = sweep_dir(tmp_path / "a")
    b = shutil.copytree(a, tmp_path / "b")
    write_run(b / run_name("minor_sft", 1e-3, 0.1, 2), method="minor_sft", lr=1e-3, beta=0.1, seed=2,
              accuracy=0.40, n_questions=N, dataset="embedded", split=True)  # another result for seed 2
    sweep = load_sweeps([a, b])
    p = estimate(sweep, n_resamples=RESAMPLES).points.set_index(["method", "lr"])
    assert p.loc[("minor_sft", 1e-3), "n_runs"] == 2  # seeds 0 and 1; seed 2's two results are excluded
    assert set(p.drop(("minor_sft", 1e-3))["n_runs"]) == {3}
    assert set(sweep.set_aside["why"]) == {"repeat", "conflict"}
    assert (sweep.set_aside["why"] == "conflict").sum() == 2
    note = [n for n in sweep.notes if "different results" in n]
    assert len(note) == 1 and "MinorSFT lr 0.001 β 0.1 seed 2 (0.5800 in" in note[0] and "0.4000 in" in note[0]


def test_a_failed_copy_beside_a_finished_run_is_a_repeat(tmp_path):
    """A job that failed before it read its inputs records neither fingerprints nor a base accuracy."""
    a = sweep_dir(tmp_path / "a")
    write_run(tmp_path / "b" / "rerun", method="sft", lr=1e-3, seed=0, status="failed", dataset="embedded",
              n_questions=N, base_accuracy=None)
    sweep = load_sweeps([a, tmp_path / "b"])
    assert list(sweep.set_aside["why"]) == ["repeat"] and sweep.set_aside["status"].iloc[0] == "failed"
    assert set(estimate(sweep, n_resamples=RESAMPLES).points["n_failed"]) == {0}
