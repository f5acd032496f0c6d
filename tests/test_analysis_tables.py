"""analysis.tables and analysis.claims on hand-built run directories (DESIGN §3 contract files)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import tables as T
from analysis.claims import FAILS, HOLDS, NOT_MEASURED, claims_table
from analysis.rundirs import load_sweep
from analysis.synthetic import run_name, write_run

N = 200  # questions per eval: accuracies below are multiples of 1/200, so means are exact


def build(root, plan, base=0.25, **kw):
    """plan: {(method, beta): {lr: accuracy | "diverged" | "failed" | [acc_or_status per seed]}}."""
    for (method, beta), by_lr in plan.items():
        for lr, cell in by_lr.items():
            for seed, v in enumerate(cell if isinstance(cell, list) else [cell]):
                d = root / run_name(method, lr, beta, seed)
                outcome = {"status": v} if isinstance(v, str) else {"accuracy": v}
                write_run(
                    d,
                    method=method,
                    lr=lr,
                    beta=beta,
                    seed=seed,
                    base_accuracy=base,
                    n_questions=N,
                    **outcome,
                    **kw,
                )
    return load_sweep(root)


def threshold_row(sweep, method="SFT"):
    th = T.threshold_table(sweep)
    return th[th["method"] == method].iloc[0]


def test_interior_peak(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: 0.30, 1e-3: 0.60, 1e-2: 0.20}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert r["accuracy"] == pytest.approx(0.60)
    assert r["next_lr"] == 1e-2
    assert r["accuracy_next_lr"] == pytest.approx(0.20)
    assert r["drop"] == pytest.approx(0.40)
    assert r["gain_over_base"] == pytest.approx(0.35)
    assert r["bracketed"] == "yes"
    assert r["ci_method"] == "bootstrap over 200 questions"
    assert r["ci_low"] < 0.60 < r["ci_high"]


def test_edge_peaks_are_flagged(tmp_path):
    s = build(
        tmp_path,
        {
            ("sft", None): {1e-4: 0.30, 1e-3: 0.40, 1e-2: 0.50},
            ("minor_sft", 0.1): {1e-4: 0.50, 1e-3: 0.40, 1e-2: 0.30},
        },
    )
    up, down = threshold_row(s, "SFT"), threshold_row(s, "MinorSFT")
    assert up["threshold_lr"] == 1e-2
    assert up["bracketed"] == "threshold not bracketed: extend the grid up"
    assert math.isnan(up["next_lr"]) and math.isnan(up["drop"])
    assert down["threshold_lr"] == 1e-4
    assert down["bracketed"] == "threshold not bracketed: extend the grid down"
    assert down["drop"] == pytest.approx(0.10)


def test_tie_takes_the_lower_lr_and_says_so(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: 0.30, 1e-3: 0.50, 3e-3: 0.50, 1e-2: 0.20}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert "tie: lr 3e-3 reach the same accuracy; the lower lr is reported" in r["note"]
    assert r["next_lr"] == 3e-3 and r["drop"] == pytest.approx(0.0)


def test_best_beta_per_lr_and_beta_tie(tmp_path):
    s = build(
        tmp_path,
        {
            ("minor_sft", 0.1): {1e-4: 0.30, 1e-3: 0.60, 1e-2: 0.20},
            ("minor_sft", 0.5): {1e-4: 0.30, 1e-3: 0.40, 1e-2: 0.55},
        },
    )
    r = threshold_row(s, "MinorSFT")
    assert (r["threshold_lr"], r["beta"]) == (1e-3, 0.1)
    assert r["accuracy_next_lr"] == pytest.approx(0.55)  # the best β at the next lr, not the peak's β
    assert "tie: β 0.5 reach the same accuracy; the lower β is reported" not in r["note"]
    curve = T.lr_curve(T.points(s))
    assert list(curve["beta"]) == [0.1, 0.1, 0.5]
    assert curve.loc[0, "beta_tie"] == [0.5]  # both β give 0.30 at 1e-4: the lower β is used


def test_single_lr_is_not_bracketed(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-3: 0.50}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert r["bracketed"] == "threshold not bracketed: a single learning rate; extend the grid up and down"


def test_all_diverged_has_no_threshold(tmp_path):
    s = build(
        tmp_path,
        {("sft", None): {1e-4: "diverged", 1e-3: ["diverged", "diverged"]}, ("minor_sft", 0.1): {1e-3: 0.50}},
    )
    r = threshold_row(s)
    assert math.isnan(r["threshold_lr"]) and math.isnan(r["accuracy"])
    assert r["note"] == "no threshold: all runs diverged (lr 1e-4, 1e-3)"
    assert r["bracketed"] == "not measured"
    assert "SFT" not in set(T.best_configs(s)["method"])


def test_diverged_next_lr_counts_as_a_drop(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: 0.30, 1e-3: 0.60, 1e-2: "diverged"}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-3
    assert r["accuracy_next_lr"] == "diverged" and r["drop"] == "diverged"
    assert r["bracketed"] == "yes"


def test_mean_over_seeds_and_t_interval(tmp_path):
    s = build(tmp_path, {("sft", None): {1e-4: [0.50, 0.70], 1e-3: [0.40, 0.40]}})
    r = threshold_row(s)
    assert r["threshold_lr"] == 1e-4 and r["accuracy"] == pytest.approx(0.60)
    assert r["n_seeds"] == 2 and r["ci_method"] == "t over 2 seeds"
    assert (r["ci_low"], r["ci_high"]) == (0.0, 1.0)  # 0.6 ± 1.27, clipped to [0, 1]


def test_accuracy_grid_marks_diverged_and_has_base_row(tmp_path):
    s = build(
        tmp_path,
        {
            ("sft", None): {1e-4: 0.30, 1e-3: [0.60, "diverged"], 1e-2: "diverged"},
            ("minor_sft", 0.1): {1e-4: 0.35, 1e-3: 0.65, 1e-2: "failed"},
        },
        base=0.125,
    )
    g = T.accuracy_grids(s)["world"]
    assert list(g.columns) == ["method", "beta", 1e-4, 1e-3, 1e-2]
    assert list(g["method"]) == ["base model", "SFT", "MinorSFT"]
    assert g.iloc[0][1e-3] == pytest.approx(0.125)
    sft = g[g["method"] == "SFT"].iloc[0]
    assert sft[1e-4] == pytest.approx(0.30)
    assert sft[1e-3] == "0.600 (1/2 diverged)"
    assert sft[1e-2] == "diverged"
    assert g[g["method"] == "MinorSFT"].iloc[0][1e-2] == "failed"
    assert "1 of 2 seeds at the peak did not finish ok" in threshold_row(s)["note"]


def test_best_config_and_paired_table_known_answer(tmp_path):
    a = np.zeros(N, bool)
    a[:60] = True
    b = np.zeros(N, bool)
    b[:120] = True
    write_run(tmp_path / "sft", method="sft", lr=1e-3, correct=a)
    write_run(tmp_path / "minor", method="minor_sft", lr=3e-3, beta=0.1, correct=b)
    s = load_sweep(tmp_path)
    best = T.best_configs(s)
    assert list(best["method"]) == ["SFT", "MinorSFT"]
    p = T.paired_table(s, best)
    row = p[p["comparison"] == "MinorSFT vs SFT"].iloc[0]
    assert row["delta"] == pytest.approx(0.30)
    assert row["ci_low"] > 0 and row["p_value"] < 0.001 and row["n_questions"] == N
    assert (row["config"], row["baseline_config"]) == ("MinorSFT β=0.1 lr=3e-3", "SFT lr=1e-3")
    missing = p[p["comparison"] == "MinorSFT vs SFT using DPO"].iloc[0]
    assert missing["note"] == "not measured: no ok run of SFT using DPO" and pd.isna(missing["delta"])


def _claims(s):
    pts = T.points(s)
    best = T.best_configs(s, pts)
    return claims_table(s, pts, best, T.paired_table(s, best))


def test_claims_hold_on_a_paper_like_sweep(tmp_path):
    s = build(
        tmp_path,
        {
            ("sft", None): {1e-4: 0.30, 1e-3: 0.50, 1e-2: 0.20},
            ("dpo_sft", 0.1): {1e-4: 0.30, 1e-3: 0.52, 1e-2: 0.25},
            ("minor_sft", 0.1): {1e-4: 0.30, 1e-3: 0.60, 1e-2: 0.70, 3e-2: 0.10},
        },
    )
    c = _claims(s)
    by = {(r.claim, r.scope): r.outcome for r in c.itertuples()}
    for m in ("SFT", "SFT using DPO", "MinorSFT"):
        assert by[("each method improves up to a learning-rate threshold and degrades beyond it", m)] == HOLDS
    assert by[("MinorSFT's threshold learning rate is higher than raw SFT's", "MinorSFT vs SFT")] == HOLDS
    best_row = c[c["claim"] == "MinorSFT is the best method"].iloc[0]
    assert best_row["outcome"] == HOLDS and "MinorSFT vs SFT: Δ +0.200" in best_row["evidence"]
    # write_run's default m_theta is 0.5 for every run: equal mθ is not "deviates less"
    dev = c[c["claim"].str.startswith("DPO-derived")]
    assert set(dev["outcome"]) == {FAILS}


def test_claims_not_measured_when_grid_does_not_decide(tmp_path):
    s = build(
        tmp_path,
        {
            ("sft", None): {1e-4: 0.30, 1e-3: 0.50},  # top edge: threshold ≥ 1e-3
            ("minor_sft", 0.1): {1e-4: 0.30, 1e-3: 0.60, 1e-2: 0.20},
        },
    )
    c = _claims(s)
    sft = c[(c["scope"] == "SFT")].iloc[0]
    assert sft["outcome"] == NOT_MEASURED and "extend the grid up" in sft["evidence"]
    lr = c[c["claim"] == "MinorSFT's threshold learning rate is higher than raw SFT's"].iloc[0]
    assert lr["outcome"] == FAILS  # MinorSFT's is exactly 1e-3, SFT's is at least 1e-3
    best = c[c["claim"] == "MinorSFT is the best method"].iloc[0]
    assert best["outcome"] in (HOLDS, FAILS)  # decided by the paired test on SFT alone
    dev = c[c["scope"] == "SFT using DPO vs SFT"].iloc[0]
    assert dev["outcome"] == NOT_MEASURED


def test_claims_lower_m_theta(tmp_path):
    plan = {
        ("sft", None): {1e-4: 0.3, 1e-3: 0.5, 1e-2: 0.2},
        ("dpo_sft", 0.1): {1e-4: 0.3, 1e-3: 0.5, 1e-2: 0.2},
    }
    for (method, beta), by_lr in plan.items():
        for lr, acc in by_lr.items():
            write_run(
                tmp_path / run_name(method, lr, beta, 0),
                method=method,
                lr=lr,
                beta=beta,
                accuracy=acc,
                n_questions=N,
                m_theta=(1.0 if method == "sft" else 0.4) * lr * 1e3,
            )
    c = _claims(load_sweep(tmp_path))
    dev = c[c["claim"].str.startswith("DPO-derived") & c["scope"].str.startswith("SFT using DPO")]
    assert list(dev["outcome"]) == [HOLDS, HOLDS]
    assert "lower at 3 of 3 points" in dev.iloc[1]["evidence"]


@pytest.mark.parametrize(
    "minor, sft, outcome",
    [
        ({1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.6}, {1e-4: 0.3, 1e-3: 0.5}, NOT_MEASURED),  # ≥1e-2 vs ≥1e-3
        ({1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.6}, {1e-4: 0.3, 1e-3: 0.5, 1e-2: 0.2}, HOLDS),  # ≥1e-2 vs =1e-3
        ({1e-4: 0.6, 1e-3: 0.4}, {1e-4: 0.3, 1e-3: 0.5, 1e-2: 0.2}, FAILS),  # ≤1e-4 vs =1e-3
    ],
)
def test_threshold_lr_claim_uses_edge_bounds(tmp_path, minor, sft, outcome):
    s = build(tmp_path, {("sft", None): sft, ("minor_sft", 0.1): minor})
    c = _claims(s)
    assert (
        c[c["claim"] == "MinorSFT's threshold learning rate is higher than raw SFT's"].iloc[0]["outcome"]
        == outcome
    )
