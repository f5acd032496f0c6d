"""analysis.estimate, analysis.tables and analysis.claims on hand-built run directories (docs/architecture.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import tables as T
from analysis.across import ACROSS
from analysis.claims import FAILS, HOLDS, UNDECIDED, claims_table
from analysis.estimate import estimate, late_train_m_theta, vertex
from analysis.planned import read_plan, unfinished
from analysis.rundirs import load_sweep
from synthetic_runs import run_name, write_run

N = 200  # questions per eval: accuracies below are multiples of 1/200, so means are exact
RESAMPLES = 500  # enough for the properties below, fast on 2 cores


def build(root, plan, base=0.25, **kw):
    """plan: {(method, beta): {lr: accuracy | "diverged" | "failed" | [acc_or_status per seed]}}."""
    for (method, beta), by_lr in plan.items():
        for lr, cell in by_lr.items():
            for seed, v in enumerate(cell if isinstance(cell, list) else [cell]):
                d = root / run_name(method, lr, beta, seed)
                outcome = {"status": v} if isinstance(v, str) else {"accuracy": v}
                write_run(d, method=method, lr=lr, beta=beta, seed=seed, base_accuracy=base, n_questions=N,
                          **outcome, **kw)
    return load_sweep(root)


def est_of(sweep):
    return estimate(sweep, n_resamples=RESAMPLES)


def threshold_row(sweep, method="SFT"):
    th = T.threshold_table(est_of(sweep), sweep)
    return th[th["method"] == method].iloc[0]


def all_claims(sweep, across=False):
    """The claims table: its per-setting rows, or with `across` also the across-settings rows."""
    e = est_of(sweep)
    best = T.best_configs(e, sweep)
    c = claims_table(e, sweep, best, T.paired_table(e, best), T.beta_sensitivity(e))
    return c if across else c[c["setting"] != ACROSS]


def verdicts(c):
    return {(r.claim, r.scope): r.outcome for r in c.itertuples()}


EACH = "each method improves up to a learning-rate threshold and degrades beyond it"
LR_CLAIM = "MinorSFT's threshold learning rate is higher than raw SFT's"


def test_vertex_of_a_known_parabola():
    x = np.array([-4.0, -3.5, -3.0, -2.5, -2.0])
    y = 1 - (x + 2.8) ** 2  # peak at log10 lr = -2.8, between grid points
    v = vertex(x, y[:, None], np.array([2]))
    assert v[0] == pytest.approx(-2.8)
    flat_edge = vertex(x, y[:, None], np.array([4]))
    assert flat_edge[0] == -2.0  # an edge peak stays on the edge


def test_interior_peak_bracket_vertex_and_interval(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: [0.30] * 3, 1e-3: [0.60] * 3, 1e-2: [0.20] * 3}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert (r["bracket_low"], r["bracket_high"]) == (1e-4, 1e-2)
    assert 1e-4 < r["vertex_lr"] < 1e-2 and r["lr_ci_low"] <= r["vertex_lr"] <= r["lr_ci_high"]
    assert r["p_argmax"] == 1.0  # a 0.3-point margin never flips under resampling
    assert r["accuracy"] == pytest.approx(0.60) and r["accuracy_next_lr"] == pytest.approx(0.20)
    assert r["drop"] == pytest.approx(0.40) and r["gain_over_base"] == pytest.approx(0.35)
    assert r["bracketed"] == "yes" and r["n_seeds"] == 3
    assert r["ci_low"] < 0.60 < r["ci_high"]
    assert "3 seed(s) × 200 questions, all questions (no split)" in r["ci_method"]


def test_edge_peaks_are_flagged(tmp_path):
    s = build(
        tmp_path,
        {("sft", None): {1e-4: 0.30, 1e-3: 0.40, 1e-2: 0.50}, ("minor_sft", 0.1): {1e-4: 0.50, 1e-3: 0.40, 1e-2: 0.30}},
    )
    up, down = threshold_row(s, "SFT"), threshold_row(s, "MinorSFT")
    assert up["threshold_lr"] == 1e-2 and up["bracketed"] == "threshold not bracketed: extend the grid up"
    assert math.isnan(up["next_lr"]) and math.isnan(up["bracket_high"]) and up["vertex_lr"] == pytest.approx(1e-2)
    assert down["threshold_lr"] == 1e-4 and down["bracketed"] == "threshold not bracketed: extend the grid down"
    assert down["drop"] == pytest.approx(0.10)


def test_tie_takes_the_lower_lr_and_says_so(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: 0.30, 1e-3: 0.50, 3e-3: 0.50, 1e-2: 0.20}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert "tie: lr 3e-3 reach the same accuracy; the lower lr is reported" in r["note"]


def test_best_beta_per_lr_and_beta_tie(tmp_path):
    s = build(
        tmp_path,
        {
            ("minor_sft", 0.1): {1e-4: 0.30, 1e-3: 0.60, 1e-2: 0.20},
            ("minor_sft", 0.5): {1e-4: 0.30, 1e-3: 0.40, 1e-2: 0.55},
        },
    )
    e = est_of(s)
    curve = e.curves[("world", "minor_sft")]
    assert list(curve["beta"]) == [0.1, 0.1, 0.5]
    assert curve.loc[0, "beta_tie"] == [0.5]  # both β give 0.30 at 1e-4: the lower β is used
    r = T.threshold_table(e, s).iloc[0]
    assert (r["threshold_lr"], r["beta"]) == (1e-3, 0.1)
    assert r["accuracy_next_lr"] == pytest.approx(0.55)  # the best β at the next lr, not the peak's β


def test_selection_split_chooses_report_split_scores(tmp_path):
    """β=0.5 wins on the selection questions, β=0.1 on the report ones: β=0.5 is chosen and scored on the
    report split — the number a reader gets is not the one the choice was made on."""
    split = ["select"] * 100 + ["report"] * 100
    good_sel = np.r_[np.ones(70), np.zeros(30), np.ones(40), np.zeros(60)].astype(bool)  # 0.70 / 0.40
    good_rep = np.r_[np.ones(50), np.zeros(50), np.ones(80), np.zeros(20)].astype(bool)  # 0.50 / 0.80
    for seed in range(2):
        write_run(tmp_path / f"b05_{seed}", method="minor_sft", lr=1e-3, beta=0.5, seed=seed, correct=good_sel,
                  split=split)
        write_run(tmp_path / f"b01_{seed}", method="minor_sft", lr=1e-3, beta=0.1, seed=seed, correct=good_rep,
                  split=split)
    s = load_sweep(tmp_path)
    e = est_of(s)
    assert e.settings["world"].split_source == "predictions.jsonl"
    assert (e.settings["world"].n_select, e.settings["world"].n_report) == (100, 100)
    best = T.best_configs(e, s).iloc[0]
    assert best["beta"] == 0.5
    assert best["select_accuracy"] == pytest.approx(0.70) and best["accuracy"] == pytest.approx(0.40)
    assert "report split" in best["ci_method"]


def test_diverged_seed_scores_the_base_model_and_failed_is_missing(tmp_path):
    s = build(
        tmp_path,
        {
            ("sft", None): {1e-4: 0.30, 1e-3: [0.60, "diverged"], 1e-2: "diverged"},
            ("minor_sft", 0.1): {1e-4: 0.35, 1e-3: [0.65, "failed"], 1e-2: "failed"},
        },
        base=0.2,
    )
    e = est_of(s)
    sft = e.point("world", "sft", 1e-3, math.nan)
    assert sft["accuracy"] == pytest.approx(0.40)  # (0.60 + base 0.20) / 2: divergence is a failure
    minor = e.point("world", "minor_sft", 1e-3, 0.1)
    assert minor["accuracy"] == pytest.approx(0.65) and minor["n_failed"] == 1  # failed: not scored
    g = T.accuracy_grids(e)["world"]
    assert list(g["method"]) == ["base model", "SFT", "MinorSFT"]
    row = g[g["method"] == "SFT"].iloc[0]
    assert row[1e-3] == "0.400 (1/2 diverged)" and row[1e-2] == "0.200 (1/1 diverged)"
    assert g[g["method"] == "MinorSFT"].iloc[0][1e-2] == "failed (missing)"
    # a failed top lr never brackets the threshold: MinorSFT's peak is on the top edge of what was scored
    th = T.threshold_table(e, s).set_index("method")
    assert th.loc["MinorSFT", "bracketed"] == "threshold not bracketed: extend the grid up"
    assert "lr 1e-2: every run failed (missing data, not a drop)" in th.loc["MinorSFT", "note"]
    assert th.loc["SFT", "threshold_lr"] == 1e-3 and th.loc["SFT", "accuracy_next_lr"] == pytest.approx(0.20)
    div = T.divergence_table(e).set_index(["method", "lr"])
    assert div.loc[("SFT", 1e-3), "divergence_rate"] == 0.5 and div.loc[("SFT", 1e-2), "divergence_rate"] == 1.0
    assert div.loc[("MinorSFT", 1e-3), "divergence_rate"] == 0.0  # the failed seed counts in neither
    c = verdicts(all_claims(s))
    assert c[(EACH, "MinorSFT")] == UNDECIDED  # a crash is never "degrades"


def test_all_diverged_has_no_threshold(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: "diverged", 1e-3: ["diverged", "diverged"]},
                         ("minor_sft", 0.1): {1e-3: 0.50}})
    r = threshold_row(s)
    assert math.isnan(r["threshold_lr"]) and r["note"] == "no threshold: every scored run diverged"
    assert "SFT" not in set(T.best_configs(est_of(s), s)["method"])


def test_seed_noise_widens_the_interval(tmp_path):
    """Two seeds 0.2 apart: the hierarchical interval carries that spread; identical seeds do not."""
    noisy = build(tmp_path / "noisy", {("sft", None): {1e-3: [0.50, 0.70, 0.50, 0.70]}})
    calm = build(tmp_path / "calm", {("sft", None): {1e-3: [0.60, 0.60, 0.60, 0.60]}})
    pn, pc = est_of(noisy).points.iloc[0], est_of(calm).points.iloc[0]
    assert pn["seed_sd"] == pytest.approx(np.std([0.5, 0.7, 0.5, 0.7], ddof=1))
    assert pc["seed_sd"] == 0.0
    assert pn["ci_high"] - pn["ci_low"] > 1.5 * (pc["ci_high"] - pc["ci_low"])
    assert pn["question_se"] == pytest.approx(pc["question_se"], rel=0.5)


def test_paired_table_known_answer(tmp_path):
    a = np.zeros(N, bool)
    a[:60] = True
    b = np.zeros(N, bool)
    b[:120] = True
    write_run(tmp_path / "sft", method="sft", lr=1e-3, correct=a)
    write_run(tmp_path / "minor", method="minor_sft", lr=3e-3, beta=0.1, correct=b)
    s = load_sweep(tmp_path)
    e = est_of(s)
    best = T.best_configs(e, s)
    assert list(best["method"]) == ["SFT", "MinorSFT"]
    p = T.paired_table(e, best)
    row = p[p["comparison"] == "MinorSFT vs SFT"].iloc[0]
    assert row["delta"] == pytest.approx(0.30) and row["n_questions"] == N
    assert row["ci_low"] > 0 and row["p_value"] < 0.01
    assert row["note"] == "one seed: question noise only"
    assert (row["config"], row["baseline_config"]) == ("MinorSFT β=0.1 lr=3e-3", "SFT lr=1e-3")
    missing = p[p["comparison"] == "MinorSFT vs SFT using DPO"].iloc[0]
    assert missing["note"] == "not measured: no scored run of SFT using DPO" and pd.isna(missing["delta"])


PAPER_LIKE = {
    ("sft", None): {1e-4: [0.30] * 3, 1e-3: [0.50, 0.52, 0.48], 1e-2: [0.20] * 3},
    ("dpo_sft", 0.1): {1e-4: [0.30] * 3, 1e-3: [0.52] * 3, 1e-2: [0.25] * 3},
    ("minor_sft", 0.1): {1e-4: [0.30] * 3, 1e-3: [0.60] * 3, 1e-2: [0.70, 0.72, 0.68], 3e-2: [0.10] * 3},
    ("minor_sft", 0.5): {1e-4: [0.25] * 3, 1e-3: [0.40] * 3, 1e-2: [0.45] * 3, 3e-2: [0.10] * 3},
}


def test_claims_on_a_paper_like_sweep_with_seeds(tmp_path):
    s = build(tmp_path, PAPER_LIKE)
    c = all_claims(s)
    by = verdicts(c)
    for m in ("SFT", "SFT using DPO", "MinorSFT"):
        assert by[(EACH, m)] == HOLDS
    lr = c[c["claim"] == LR_CLAIM].iloc[0]
    assert lr["outcome"] == HOLDS and "P(MinorSFT > SFT) = 1.000" in lr["evidence"]
    best = c[c["claim"] == "MinorSFT is the best method"].iloc[0]
    assert best["outcome"] == HOLDS and "MinorSFT vs SFT: Δ +0.200" in best["evidence"]
    assert by[("β needs tuning", "MinorSFT at its best lr 1e-2")] == HOLDS
    dev = c[c["claim"].str.startswith("DPO-derived")]
    assert set(dev["outcome"]) == {UNDECIDED}  # every run has mθ 0.5: no difference, so no decision


def test_one_seed_decides_nothing(tmp_path):
    one = {k: {lr: v[0] for lr, v in by.items()} for k, by in PAPER_LIKE.items()}
    c = all_claims(build(tmp_path, one))
    decided = c[c["outcome"] != UNDECIDED]
    assert decided.empty, decided
    assert c["evidence"].str.contains("one seed decides nothing").sum() >= 5


def test_claim_two_does_not_hold_when_minor_sft_peaks_lower(tmp_path):
    plan = {
        ("sft", None): {1e-4: [0.3] * 3, 1e-3: [0.4] * 3, 1e-2: [0.6] * 3, 1e-1: [0.2] * 3},
        ("minor_sft", 0.1): {1e-4: [0.3] * 3, 1e-3: [0.6] * 3, 1e-2: [0.3] * 3, 1e-1: [0.1] * 3},
    }
    c = all_claims(build(tmp_path, plan))
    assert c[c["claim"] == LR_CLAIM].iloc[0]["outcome"] == FAILS


def test_deviation_claim_uses_absolute_eval_m_theta(tmp_path):
    """SFT past its threshold forgets: eval mθ goes negative. Signed, that would read as "deviates
    less"; |mθ| does not let forgetting look like staying close."""
    for seed in range(3):
        for method, beta, mt in (("sft", None, -2.0 - 0.1 * seed), ("dpo_sft", 0.1, 0.5 + 0.1 * seed)):
            for lr, acc in ((1e-4, 0.3), (1e-3, 0.5), (1e-2, 0.2)):
                write_run(tmp_path / run_name(method, lr, beta, seed), method=method, lr=lr, beta=beta,
                          seed=seed, accuracy=acc, n_questions=N, m_theta=mt, train_m_theta=abs(mt))
    c = all_claims(load_sweep(tmp_path))
    by = verdicts(c)
    assert by[("DPO-derived losses deviate less (lower mθ) than raw SFT",
               "SFT using DPO vs SFT, each at its best: final eval |mθ|")] == HOLDS
    assert by[("DPO-derived losses deviate less (lower mθ) than raw SFT",
               "SFT using DPO vs SFT, each at its best: train mθ (last quarter of steps)")] == HOLDS


def test_late_train_m_theta_averages_the_last_quarter():
    m = pd.DataFrame({"run": ["a"] * 8, "step": np.arange(1, 9) * 10, "m_theta": [0, 0, 0, 0, 0, 0, 1.0, 3.0]})
    assert late_train_m_theta(m).loc["a"] == pytest.approx(4 / 3)  # steps 60, 70, 80 (≥ 0.75 · 80): 0, 1, 3


def test_two_settings_get_a_mean_paired_row_but_no_across_settings_verdict(tmp_path):
    for ds in ("world", "fineval"):
        build(tmp_path / ds, {("sft", None): {1e-3: [0.4] * 2}, ("minor_sft", 0.1): {1e-3: [0.5] * 2}},
              dataset=ds)
    s = load_sweep(tmp_path)
    e = est_of(s)
    p = T.paired_table(e, T.best_configs(e, s))
    pooled = p[(p["setting"] == T.ALL_SETTINGS) & (p["comparison"] == "MinorSFT vs SFT")].iloc[0]
    assert pooled["delta"] == pytest.approx(0.10) and pooled["ci_low"] > 0
    c = all_claims(s, across=True)
    assert c[(c["setting"] == "world") & (c["claim"] == "MinorSFT is the best method")].iloc[0]["outcome"] == HOLDS
    # two settings cannot tell a between-setting spread from noise: the across-settings row says so
    across = c[(c["setting"] == ACROSS) & (c["claim"] == "MinorSFT is the best method")].iloc[0]
    assert across["outcome"] == "cannot judge" and "2 of 2 setting(s) measured it" in across["evidence"]


def test_planned_grid_lists_what_never_finished(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: 0.3, 1e-3: "failed"}})
    plan = {"experiment": "t", "points": [
        {"method": "sft", "lr": lr, "beta": None, "seed": 0, "status": "x", "run_dir": "d"} for lr in (1e-4, 1e-3, 1e-2)
    ]}
    (tmp_path / "sweep_summary.json").write_text(json.dumps(plan))
    planned, problems = read_plan(tmp_path)
    assert problems == [] and len(planned) == 3
    u = unfinished(planned, s.runs)
    assert list(zip(u["lr"], u["status"], strict=True)) == [(1e-3, "failed"), (1e-2, "never finished")]


def test_a_sweep_killed_before_its_summary_is_planned_from_its_sweep_plan_as_the_sweeper_expanded_it(tmp_path):
    """sweep_plan.json lists the points as the sweeper expanded them (a refinement midpoint at 3e-3, no β for
    sft): the report's plan is that list, not a re-expansion of multirun.yaml's grid (which says otherwise here);
    a summary that cannot be read leaves the plan to sweep_plan.json, and is named."""
    s = build(tmp_path, {("sft", None): {1e-3: 0.3}})
    points = [{"method": "sft", "lr": 1e-3, "beta": None, "seed": 0, "label": "a", "run_dir": "sft/a"},
              {"method": "sft", "lr": 3e-3, "beta": None, "seed": 0, "label": "b", "run_dir": "sft/b"},
              {"method": "minor_sft", "lr": 1e-3, "beta": 0.1, "seed": 1, "label": "c", "run_dir": "m/c"}]
    (tmp_path / "sweep_plan.json").write_text(json.dumps({"points": points}))
    (tmp_path / "multirun.yaml").write_text("grid:\n  seeds: [0]\n  methods:\n    sft: {lr: [0.001, 0.01]}\n")
    planned, problems = read_plan(tmp_path)
    assert problems == [] and set(planned["source"]) == {"sweep_plan.json"}
    assert list(zip(planned["method"], planned["lr"], planned["seed"], strict=True)) == [
        ("sft", 1e-3, 0), ("sft", 3e-3, 0), ("minor_sft", 1e-3, 1)]
    assert planned["beta"].isna().tolist() == [True, True, False]
    u = unfinished(planned, s.runs)
    assert list(zip(u["method"], u["lr"], u["status"], strict=True)) == [
        ("sft", 3e-3, "never finished"), ("minor_sft", 1e-3, "never finished")]
    (tmp_path / "sweep_summary.json").write_text("{\"points\": [")  # torn
    planned, problems = read_plan(tmp_path)
    assert len(planned) == 3 and len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'sweep_summary.json'}")
