"""Claims judged across settings (analysis.across): synthetic sweeps over embedded worlds with known truth."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import tables as T
from analysis.across import ACROSS, CANNOT_JUDGE, DISAGREE, HOLDS_ACROSS, across_table
from analysis.claims import CLAIM_BEST, FAILS, HOLDS, claims_table
from analysis.estimate import estimate
from analysis.plots import all_plots
from analysis.report import build_report, main
from analysis.rundirs import load_sweep, load_sweeps
from analysis.stats import random_effects
from synthetic_runs import run_name, write_run
from wandb_records import offline_history, offline_summary

N = 200  # questions: accuracies below are multiples of 1/200, so every observed Δ is exact
RESAMPLES = 400
SFT_PEAK = 0.50


def world(root, seed: int, minor_gain: float):
    """One setting: SFT and MinorSFT over three lrs, three seeds, both peaking at 1e-3, where MinorSFT's
    accuracy is SFT's + `minor_gain`; the run directories record `world_seed`, as a job on that world does."""
    curves = {("sft", None): [0.30, SFT_PEAK, 0.20], ("minor_sft", 0.1): [0.30, SFT_PEAK + minor_gain, 0.20]}
    for (method, beta), accs in curves.items():
        for lr, acc in zip((1e-4, 1e-3, 1e-2), accs, strict=True):
            for seed_ in range(3):
                write_run(root / f"world{seed}" / run_name(method, lr, beta, seed_), method=method, lr=lr,
                          beta=beta, seed=seed_, accuracy=acc, n_questions=N, dataset="embedded", world_seed=seed)
    return root / f"world{seed}"


def claims_of(sweep) -> pd.DataFrame:
    e = estimate(sweep, n_resamples=RESAMPLES)
    best = T.best_configs(e, sweep)
    return claims_table(e, sweep, best, T.paired_table(e, best), T.beta_sensitivity(e))


def best_rows(c: pd.DataFrame) -> pd.DataFrame:
    return c[c["claim"] == CLAIM_BEST].set_index("setting")


def test_an_effect_consistent_in_three_worlds_holds_across_settings(tmp_path):
    for seed in (0, 1, 2):
        world(tmp_path, seed, minor_gain=0.15)
    c = claims_of(load_sweep(tmp_path))
    rows = best_rows(c)
    assert list(rows.index) == ["embedded · world 0", "embedded · world 1", "embedded · world 2", ACROSS]
    assert set(rows["outcome"].iloc[:3]) == {HOLDS}
    assert rows.loc[ACROSS, "outcome"] == HOLDS_ACROSS
    pooled = across_table(c).set_index("claim").loc[CLAIM_BEST]
    assert pooled["n_settings"] == 3 and pooled["estimate"] == pytest.approx(0.15)
    assert pooled["tau"] == pytest.approx(0.0) and pooled["ci_low"] > 0 and pooled["disagreeing"] == ""


def test_an_effect_that_reverses_in_one_world_does_not_hold_across_and_names_that_world(tmp_path):
    for seed, gain in ((0, 0.15), (1, 0.15), (2, -0.15)):
        world(tmp_path, seed, minor_gain=gain)
    c = claims_of(load_sweep(tmp_path))
    rows = best_rows(c)
    assert rows.loc["embedded · world 0", "outcome"] == HOLDS and rows.loc["embedded · world 2", "outcome"] == FAILS
    assert rows.loc[ACROSS, "outcome"] == DISAGREE
    assert rows.loc[ACROSS, "evidence"].startswith("does not hold in embedded · world 2;")
    pooled = across_table(c).set_index("claim").loc[CLAIM_BEST]
    assert pooled["disagreeing"] == "embedded · world 2" and pooled["tau"] > 0.1  # the worlds differ, not noise


def test_one_setting_cannot_be_judged_across_settings(tmp_path):
    c = claims_of(load_sweep(world(tmp_path, 0, minor_gain=0.15)))
    rows = best_rows(c)
    assert rows.loc["embedded", "outcome"] == HOLDS  # the default world alone keeps its plain name
    assert rows.loc[ACROSS, "outcome"] == CANNOT_JUDGE
    assert "1 of 1 setting(s) measured it" in rows.loc[ACROSS, "evidence"]
    assert set(c.loc[c["setting"] == ACROSS, "outcome"]) == {CANNOT_JUDGE}  # every claim, not only this one


def test_separate_sweep_directories_give_the_table_of_one_sweep(tmp_path):
    dirs = [world(tmp_path / "sweep", seed, gain) for seed, gain in ((0, 0.15), (1, 0.10), (2, -0.05))]
    assert main([str(tmp_path / "sweep"), "--no-wandb", "--out", str(tmp_path / "one")]) == 0
    assert main([*map(str, dirs), "--no-wandb", "--out", str(tmp_path / "three")]) == 0
    for table in ("claims.csv", "claims_across.csv", "threshold.csv", "threshold_by_setting.csv"):
        one, three = (pd.read_csv(tmp_path / d / table) for d in ("one", "three"))
        assert len(one) and one.equals(three), table
    merged = load_sweeps(dirs)
    assert sorted(merged.runs["setting"].unique()) == ["embedded · world 0", "embedded · world 1", "embedded · world 2"]
    with pytest.raises(ValueError, match="inside"):
        load_sweeps([tmp_path / "sweep", dirs[0]])


def test_thresholds_and_the_accuracy_figure_put_the_settings_side_by_side(tmp_path):
    for seed in (0, 1, 2):
        world(tmp_path, seed, minor_gain=0.15)
    assert main([str(tmp_path), "--no-wandb", "--out", str(tmp_path / "report")]) == 0
    side = pd.read_csv(tmp_path / "report" / "threshold_by_setting.csv").set_index("method")
    assert list(side.columns) == ["embedded · world 0", "embedded · world 1", "embedded · world 2"]
    assert list(side.index) == ["SFT", "MinorSFT"]
    assert all(cell.startswith("1e-3, vertex ") for cell in side.to_numpy().ravel())  # every world peaks at 1e-3
    assert (tmp_path / "report" / "accuracy_vs_lr_by_setting.png").read_bytes()[:4] == b"\x89PNG"
    assert "Accuracy against learning rate — settings side by side" in (tmp_path / "report" / "report.html").read_text()


def test_one_setting_has_no_side_by_side_table_or_figure(tmp_path):
    sweep = load_sweep(world(tmp_path, 0, minor_gain=0.15))
    e = estimate(sweep, n_resamples=RESAMPLES)
    assert T.threshold_by_setting(T.threshold_table(e, sweep)).empty
    assert "accuracy_vs_lr_by_setting" not in [p.name for p in all_plots(sweep, e)]


def test_wandb_summary_run_carries_the_across_settings_table_and_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for seed, gain in ((0, 0.15), (1, 0.15), (2, -0.15)):
        world(tmp_path, seed, minor_gain=gain)
    rep = build_report(tmp_path, use_wandb=True)
    assert any("logged (offline)" in m for m in rep.messages), rep.messages
    (run_file,) = (tmp_path / "report" / "wandb").glob("offline-run-*/run-*.wandb")
    for _ in range(100):  # W&B's service process may still be flushing the file after finish() returned
        _, rows = offline_history(run_file)
        summary = offline_summary(run_file)
        if rows and summary:
            break
        time.sleep(0.1)
    logged = {k for r in rows for k in r}
    assert {"tables/claims_across/_type", "tables/threshold_by_setting/_type"} <= logged
    assert summary[f"{ACROSS}/{CLAIM_BEST}/best configurations, report split"] == DISAGREE


def test_random_effects_with_equal_errors_estimates_the_spread_beyond_them():
    y, s = np.array([0.1, 0.3, -0.2, 0.05]), 0.05
    p = random_effects(y, [s] * len(y))
    # with equal standard errors DerSimonian–Laird's τ² is the effects' variance minus the error variance
    assert p.tau**2 == pytest.approx(np.var(y, ddof=1) - s**2)
    assert p.estimate == pytest.approx(y.mean()) and p.ci_low < p.estimate < p.ci_high
    assert random_effects(y, [10.0] * len(y)).tau == 0.0  # all of the spread is noise


def test_three_settings_get_a_t_interval_with_two_degrees_of_freedom_never_narrower_than_their_errors():
    s = 0.05
    agreeing = random_effects([0.1, 0.1, 0.1], [s] * 3)  # no spread: the model's own error, t with 2 d.f.
    half = scipy_stats.t.ppf(0.975, 2) * s / np.sqrt(3)
    assert agreeing.ci_high - agreeing.estimate == pytest.approx(half)
    assert agreeing.estimate - agreeing.ci_low == pytest.approx(half)
    # 0.1 ± 0.124: a normal interval (± 0.057) would call three precise settings certain; t(2) does not
    assert agreeing.ci_low < 0 < agreeing.estimate

    spread = random_effects([0.05, 0.10, 0.30], [s] * 3)  # settings differ beyond their errors: scaled up
    w = 1 / (s**2 + spread.tau**2)
    scale = max(1.0, float(np.sum(w * (np.array([0.05, 0.10, 0.30]) - spread.estimate) ** 2)) / 2)
    assert spread.se == pytest.approx(np.sqrt(scale / (3 * w)))
