"""analysis.search: an Optuna-style β search found among plain run directories, its tables, figures and
report section; grids are never taken for a search."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from analysis import search as S
from analysis import tables as T
from analysis.across import ACROSS
from analysis.claims import NOT_MEASURED, claims_table
from analysis.estimate import estimate
from analysis.report import build_report, main
from analysis.rundirs import load_sweep
from synthetic_runs import demo_sweep, run_name, search_sweep, write_run

# in one pytest-xdist worker, so the module fixture below runs once
pytestmark = pytest.mark.xdist_group("analysis_search")

PNG = b"\x89PNG\r\n\x1a\n"
# (β, accuracy or status) in finish order; the best is the fifth trial, after a diverged fourth
TRIALS: list[tuple[float, float | str]] = [
    (0.0312, 0.400),
    (0.5411, 0.300),
    (0.1187, 0.550),
    (0.8823, "diverged"),
    (0.0735, 0.620),
    (0.2219, 0.500),
]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = search_sweep(tmp_path_factory.mktemp("search") / "optuna", TRIALS)
    return root, build_report(root, use_wandb=False)


def test_best_beta_row_is_the_constructed_best(searched):
    root, rep = searched
    best = pd.read_csv(rep.out_dir / "search_best_beta.csv")
    assert len(best) == 1
    row = best.iloc[0]
    assert (row["method"], row["beta"], row["lr"], row["accuracy"]) == ("MinorSFT", 0.0735, 1e-3, 0.62)
    assert (row["n_trials"], row["n_ok"], row["n_diverged"], row["n_failed"], row["trial"]) == (6, 5, 1, 0, 4)
    assert row["run"] == "minor_sft/lr0.001_beta0.0735_seed0"
    assert (root / row["run"] / "result.json").is_file()


def test_all_trials_csv_is_in_finish_order_with_running_best(searched):
    _, rep = searched
    tr = pd.read_csv(rep.out_dir / "search_trials.csv")
    assert list(tr.columns) == S.TRIAL_COLUMNS
    assert list(tr["trial"]) == [0, 1, 2, 3, 4, 5]
    assert list(tr["beta"]) == [b for b, _ in TRIALS]  # written in reverse: not directory or mtime order
    assert list(tr["status"]) == ["ok", "ok", "ok", "diverged", "ok", "ok"]
    assert list(tr["running_best"]) == [0.40, 0.40, 0.55, 0.55, 0.62, 0.62]
    assert tr["finished_at"].iloc[0] == "2026-11-26T18:00:00+00:00"
    assert tr["finished_at"].iloc[5] == "2026-11-26T18:35:00+00:00"
    assert pd.isna(tr["accuracy"].iloc[3])
    md = (rep.out_dir / "search_trials.md").read_text()
    assert md.startswith("## Search: all trials") and md.count("\n| world | MinorSFT |") == 6


def test_search_figures_and_report_sections(searched):
    root, rep = searched
    for png in ("optimisation_history_world", "beta_vs_accuracy_world", "accuracy_vs_lr_world"):
        assert (rep.out_dir / f"{png}.png").read_bytes()[:8] == PNG
    page = rep.html.read_text()
    assert '<h2 id="search">Search</h2>' in page and '<a href="#search">' in page
    assert page.count('src="data:image/png;base64,') == 5  # 3 grid figures + 2 search figures
    assert "## Search: best β per method" in (rep.out_dir / "report.md").read_text()
    assert main([str(root), "--no-wandb", "--out", str(root / "report_cli")]) == 0


def test_search_does_not_mislead_the_grid_tables(searched):
    _, rep = searched
    th = rep.threshold.iloc[0]
    assert th["method"] == "MinorSFT" and th["note"].endswith(T.SEARCH_NOTE)
    claims = pd.read_csv(rep.out_dir / "claims.csv")
    thr = claims[claims["claim"].str.startswith("each method")].iloc[0]
    assert thr["outcome"] == NOT_MEASURED and thr["evidence"].startswith("a search (6 trials, 6 β values")
    grid = pd.read_csv(rep.out_dir / "accuracy_grid_world.csv")
    assert len(grid) == 7  # the base model and one row per trial's β


def test_grids_are_not_searches(tmp_path):
    demo = load_sweep(demo_sweep(tmp_path / "demo"))  # β ∈ {0.1, 0.5} at 5 lrs, 2 seeds
    assert S.search_keys(demo.runs) == [] and S.trials(demo).empty
    for beta in (0.05, 0.1, 0.5):  # three β, but each at two lrs
        for lr in (1e-4, 1e-3):
            write_run(
                tmp_path / "g3" / run_name("dpo_sft", lr, beta, 0), method="dpo_sft", lr=lr, beta=beta, accuracy=0.5
            )
    for lr in (1e-4, 3e-4, 1e-3, 3e-3):  # SFT has no β: distinct lrs are not a search
        write_run(tmp_path / "g3" / run_name("sft", lr, None, 0), method="sft", lr=lr, accuracy=0.5)
    assert S.search_keys(load_sweep(tmp_path / "g3").runs) == []
    rep = build_report(tmp_path / "g3", use_wandb=False)
    assert not list(rep.out_dir.glob("search_*")) and not list(rep.out_dir.glob("optimisation_history*"))
    assert 'id="search"' not in rep.html.read_text()


def test_finish_order_falls_back_to_result_json_mtime(tmp_path):
    stamps = {0.02: 3000, 0.2: 1000, 0.7: 2000}  # β: result.json mtime (s since epoch)
    for beta, mtime in stamps.items():
        d = write_run(tmp_path / f"b{beta}", method="minor_sft", lr=1e-3, beta=beta, accuracy=0.5)
        os.utime(d / "result.json", (mtime, mtime))
    tr = S.trials(load_sweep(tmp_path))
    assert list(tr["beta"]) == [0.2, 0.7, 0.02]
    assert tr["finished_at"].iloc[0] == "1970-01-01T00:16:40+00:00 (mtime)"


def test_finished_at_forms(tmp_path):
    for name, stamp in (("z", "2026-01-01T00:00:05Z"), ("naive", "2026-01-01T00:00:01"), ("bad", "soon")):
        write_run(tmp_path / name, method="sft", lr=1e-3, accuracy=0.5, finished_at=stamp)
    r = load_sweep(tmp_path).runs.set_index("run")
    assert r.loc["z", "finished_at"] == pd.Timestamp("2026-01-01T00:00:05", tz="UTC")
    assert r.loc["naive", "finished_at"] == pd.Timestamp("2026-01-01T00:00:01", tz="UTC")
    assert list(r["finished_at_from"]) == ["mtime", "result.json", "result.json"]  # sorted by run name


def test_search_over_lr_and_beta_next_to_an_sft_grid(tmp_path):
    """A search that samples lr too: the best trial wins ties by the lower β, the lr claims are not
    measured, and the claims that compare best configurations still run."""
    trials = [(0.3, 0.5), (0.05, 0.6), (0.02, 0.6), (0.9, "failed")]
    search_sweep(tmp_path, trials, lr=[1e-4, 1e-3, 3e-3, 1e-2])
    for lr, acc in ((1e-4, 0.3), (1e-3, 0.45), (1e-2, 0.2)):
        write_run(tmp_path / run_name("sft", lr, None, 0), method="sft", lr=lr, accuracy=acc)
    s = load_sweep(tmp_path)
    assert S.search_keys(s.runs) == [("world", "minor_sft")]
    best = S.best_beta(S.trials(s)).iloc[0]
    assert (best["beta"], best["lr"], best["trial"], best["n_failed"]) == (0.02, 3e-3, 2, 1)
    assert best["note"] == "tie: 2 trials reach this accuracy; the lowest β is reported"
    e = estimate(s)
    b = T.best_configs(e, s)
    claims = claims_table(e, s, b, T.paired_table(e, b), T.beta_sensitivity(e))
    claims = claims[claims["setting"] != ACROSS]
    c = claims.set_index(["claim", "scope"])["outcome"]
    assert c[("MinorSFT's threshold learning rate is higher than raw SFT's", "MinorSFT vs SFT")] == NOT_MEASURED
    each = "each method improves up to a learning-rate threshold and degrades beyond it"
    assert c[(each, "MinorSFT")] == NOT_MEASURED
    assert c[(each, "SFT")] == "undecided"  # one seed decides nothing
    best = claims.set_index("claim").loc["MinorSFT is the best method"]
    assert "MinorSFT vs SFT: Δ" in best["evidence"]  # the best trial still enters the comparison
    rep = build_report(tmp_path, use_wandb=False)
    assert (rep.out_dir / "beta_vs_accuracy_world.png").read_bytes()[:8] == PNG  # colour = lr
