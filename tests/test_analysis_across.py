"""Claims judged across settings (analysis.across): synthetic sweeps over embedded worlds with known truth."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import tables as T
from analysis.across import (
    ACROSS,
    DISAGREE,
    FAILS_ACROSS,
    HOLDS_ACROSS,
    UNDECIDED_ACROSS,
    across_rows,
    across_table,
)
from analysis.across_sim import draw, holds_rate, verdicts
from analysis.claims import CLAIM_BEST, FAILS, HOLDS, claims_table
from analysis.estimate import estimate
from analysis.report import build_report, main
from analysis.rundirs import load_sweep, load_sweeps
from analysis.stats import bayes_random_effects, random_effects
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
    assert pooled["p_positive"] > 0.975


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


def test_a_report_of_one_setting_has_no_across_rows_and_no_across_table(tmp_path):
    assert main([str(world(tmp_path, 0, minor_gain=0.15)), "--no-wandb", "--out", str(tmp_path / "report")]) == 0
    claims = pd.read_csv(tmp_path / "report" / "claims.csv")
    assert set(claims["setting"]) == {"embedded"}  # the default world alone keeps its plain name
    assert best_rows(claims).loc["embedded", "outcome"] == HOLDS
    assert not (tmp_path / "report" / "claims_across.csv").exists()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "claims across settings" not in page and "One setting: no claim is judged across settings" in page
    # nor a side-by-side threshold table or figure
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert not {"threshold_by_setting.csv", "accuracy_vs_lr_by_setting.png"} & written


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


def rows_of(claim: str, settings: dict[str, tuple[str, list[tuple[str, float, float]]]], **extra) -> list[dict]:
    """Per-setting claim rows as analysis.claims writes them: setting → (outcome, effects)."""
    return [{"setting": name, "claim": claim, "scope": claim, "key": claim, "outcome": outcome, "effects": effects,
             **extra} for name, (outcome, effects) in settings.items()]


def test_the_order_of_the_settings_does_not_decide_what_is_pooled():
    both = [("MinorSFT vs SFT", None, 0.01), ("MinorSFT vs SFT using DPO", None, 0.01)]
    settings = {"A": (HOLDS, [("MinorSFT vs SFT", 0.08, 0.01)])}
    settings |= {name: (HOLDS, [(w, e, se) for w, _, se in both]) for name, e in (("B", .08), ("C", .09), ("D", .07))}
    rows = rows_of(CLAIM_BEST, settings)
    first, last = across_rows(rows, list(settings)), across_rows(rows[1:] + rows[:1], list(settings))
    assert first == last  # A first used to give "cannot judge — 1 of 4", A last "holds across settings"
    assert first[0]["outcome"] == HOLDS_ACROSS
    assert [(r["effect"], r["n_settings"]) for r in first[0]["pooled"]] == [("MinorSFT vs SFT", 4),
                                                                           ("MinorSFT vs SFT using DPO", 3)]


def test_a_setting_with_other_effects_still_counts_in_the_disagreement_check():
    settings = {name: (HOLDS, [("MinorSFT vs SFT", e, 0.01), ("MinorSFT vs SFT using DPO", e, 0.01)])
                for name, e in (("A", .08), ("B", .09), ("C", .07))}
    settings["D"] = (FAILS, [("MinorSFT vs SFT", -0.08, 0.01)])  # measured one comparison only, and it reversed
    (row,) = across_rows(rows_of(CLAIM_BEST, settings), list(settings))
    assert row["outcome"] == DISAGREE and row["evidence"].startswith("does not hold in D;")


def test_unanimous_equivalence_does_not_hold_across_settings():
    # the β claim's "does not hold" is equivalence: chosen β − worst β within ±0.02 in every setting
    settings = {name: (FAILS, [("chosen β − worst β", e, 0.004)])
                for name, e in (("A", .003), ("B", .001), ("C", .002))}
    (row,) = across_rows(rows_of("β needs tuning", settings, equivalence=0.02), list(settings))
    assert row["outcome"] == FAILS_ACROSS and "within ±0.02" in row["evidence"]
    (wide,) = across_rows(rows_of("β needs tuning", settings, equivalence=0.001), list(settings))
    assert wide["outcome"] == UNDECIDED_ACROSS  # the pool is not inside a margin this narrow: no verdict


def test_dersimonian_laird_is_exact_when_a_standard_error_is_floored():
    from fractions import Fraction as F

    y = [F(5, 100), F(0), F(10, 100)]
    w = [1 / F(1e-9) ** 2, 1 / F(3, 100) ** 2, 1 / F(4, 100) ** 2]  # the zero SE floored at 1e-9, as documented
    fixed = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sum(w)
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, y, strict=True))
    tau2 = (q - 2) / (sum(w) - sum(wi**2 for wi in w) / sum(w))  # in exact rationals: no cancellation
    assert float(tau2) == pytest.approx(0.000674, abs=5e-7)
    assert random_effects([0.05, 0, 0.1], [0, 0.03, 0.04]).tau ** 2 == pytest.approx(float(tau2), rel=1e-9)


def test_random_effects_agrees_with_statsmodels():
    from statsmodels.stats.meta_analysis import combine_effects

    y, se = np.array([0.05, 0.10, 0.30, -0.02]), np.array([0.03, 0.05, 0.04, 0.02])
    ref = combine_effects(y, se**2, method_re="dl", use_t=True)
    mine = random_effects(y, se)
    assert mine.tau**2 == pytest.approx(ref.tau2, rel=1e-10) and mine.estimate == pytest.approx(ref.mean_effect_re)
    assert mine.i2 == pytest.approx(ref.i2, rel=1e-10)
    frame = ref.summary_frame()  # "random effect wls": the Hartung–Knapp interval (its scale is > 1 here)
    assert (mine.ci_low, mine.ci_high) == pytest.approx(tuple(frame.loc["random effect wls", ["ci_low", "ci_upp"]]))


def test_the_bayesian_pool_agrees_with_direct_numerical_integration():
    from scipy import integrate

    y, se, scale = np.array([0.05, 0.01, 0.09]), np.array([0.03, 0.02, 0.045]), 0.04

    def mass(mu_high: float) -> float:  # ∫∫ prior(τ) Π N(y_i; μ, se_i² + τ²) over μ < mu_high, τ > 0
        def joint(mu, tau):
            var = se**2 + tau**2
            return np.exp(-0.5 * (tau / scale) ** 2) * np.prod(np.exp(-0.5 * (y - mu) ** 2 / var) / np.sqrt(var))
        return integrate.dblquad(joint, 0, 10 * scale, -1, mu_high, epsabs=1e-12)[0]

    p = bayes_random_effects(y, se, tau_scale=scale)
    total = mass(1.0)
    assert p.p_positive == pytest.approx(1 - mass(0.0) / total, abs=2e-4)
    assert mass(p.ci_low) / total == pytest.approx(0.025, abs=2e-4)


def test_the_simulated_verdicts_are_the_reports_verdicts():
    y, se = draw(4, 0.03, 150, seed=7)
    y = y + 0.04  # some of each verdict
    names = [f"s{i}" for i in range(4)]
    report = []
    for yi, si in zip(y, se, strict=True):
        outcome = [HOLDS if e - 1.96 * s > 0 else FAILS if e + 1.96 * s < 0 else "undecided"
                   for e, s in zip(yi, si, strict=True)]
        settings = {n: (o, [("Δ", float(e), float(s))]) for n, o, e, s in zip(names, outcome, yi, si, strict=True)}
        report.append(across_rows(rows_of(CLAIM_BEST, settings), names)[0]["outcome"])
    simulated = verdicts(y, se)
    assert simulated == report
    assert {HOLDS_ACROSS, DISAGREE, UNDECIDED_ACROSS} <= set(simulated)


def test_three_settings_find_a_real_effect_without_false_holds():
    # the operating characteristics of docs/report.md's table, loosely, on a smaller fixed-seed simulation
    null, wide = draw(3, 0.03, 2000, seed=11), draw(3, 0.05, 2000, seed=11)
    assert holds_rate(*null, 0.0) <= 0.05 and holds_rate(*wide, 0.0) <= 0.06
    assert holds_rate(*draw(3, 0.0, 2000, seed=11), 0.05) >= 0.35  # Hartung–Knapp's t(2): about 0.05


@pytest.mark.parametrize(("positive", "negative", "contra", "support", "verdict"), [
    (True, False, False, True, "holds across settings"),
    (True, False, True, True, "settings disagree"),  # a positive pool never outvotes a setting where it fails
    (True, False, True, False, "settings disagree"),
    (False, False, True, True, "settings disagree"),
    (False, True, False, False, "does not hold across settings"),
    (False, True, True, False, "does not hold across settings"),
    (False, True, False, True, "undecided across settings"),  # the pool fails but a setting holds
    (False, False, False, False, "undecided across settings"),
])
def test_the_across_verdict_follows_its_rules_case_by_case(positive, negative, contra, support, verdict):
    """docs/report.md's rules, written out: holds only when every pooled effect is positive and no setting's
    own verdict is "does not hold"; settings disagree when one fails while another holds or the pool is positive."""
    from analysis.across import decide

    assert decide(positive, negative, contra, support) == verdict
