"""analysis.report end to end on hand-built sweeps: files written, exit codes, incomplete and corrupt
sweeps, the offline W&B summary, and a headless-Chromium render of report.html."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.browser_check import check_render, find_browser
from analysis.render import html_page
from analysis.report import build_report, main
from synthetic_runs import demo_sweep, write_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo sweep (3 methods, 5 lrs, 2 β, 2 seeds, one diverged lr) and its report, built once."""
    sweep = demo_sweep(tmp_path_factory.mktemp("demo") / "sweep")
    return sweep, build_report(sweep, use_wandb=False)


def test_report_writes_every_file(demo):
    sweep, rep = demo
    out = sweep / "report"
    assert rep.out_dir == out and rep.html == out / "report.html"
    for stem in ("claims", "threshold", "best_config", "paired", "accuracy_grid_world", "runs"):
        assert (out / f"{stem}.csv").stat().st_size > 0
        assert (out / f"{stem}.md").read_text().startswith("## ")
    for png in ("accuracy_vs_lr_world", "m_theta_vs_step_world", "m_theta_vs_accuracy_world"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.md").exists()
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporary files


def test_report_html_is_self_contained(demo):
    _, rep = demo
    page = rep.html.read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    for heading in ("The paper&#x27;s claims", "Learning-rate threshold per method", "Accuracy grids"):
        assert heading in page


def test_report_numbers_on_the_demo(demo):
    _, rep = demo
    th = rep.threshold.set_index("method")
    # accuracies are on the report split (half the demo's 400 questions): near the plan, not equal to it
    assert th.loc["SFT", "threshold_lr"] == 1e-3 and th.loc["SFT", "accuracy_next_lr"] == pytest.approx(0.40, abs=0.05)
    assert (th.loc["SFT", "bracket_low"], th.loc["SFT", "bracket_high"]) == (3e-4, 3e-3)
    assert th.loc["MinorSFT", "threshold_lr"] == 3e-3 and th.loc["MinorSFT", "beta"] == 0.1
    assert th.loc["MinorSFT", "ci_method"] == "bootstrap: 2 seed(s) × 200 questions, report split"
    claims = pd.read_csv(rep.out_dir / "claims.csv")
    claims = claims[claims["setting"] != "across settings"].set_index(["claim", "scope"])["outcome"]
    assert claims[("MinorSFT's threshold learning rate is higher than raw SFT's", "MinorSFT vs SFT")] == "holds"
    assert "does not hold" not in set(claims)
    comp = pd.read_csv(rep.out_dir / "threshold_comparisons.csv").set_index("comparison")
    assert comp.loc["MinorSFT > SFT", "p_greater"] > 0.95
    div = pd.read_csv(rep.out_dir / "divergence.csv")
    assert div.loc[(div["method"] == "SFT") & (div["lr"] == 1e-2), "divergence_rate"].item() == 1.0
    md = (rep.out_dir / "report.md").read_text()
    assert "β and lr chosen on 200 selection questions, accuracies reported on 200 other questions" in md
    assert "trained on 3200 questions" in md


def test_cli_prints_location_and_threshold_table(demo, capsys):
    sweep, _ = demo
    assert main([str(sweep), "--no-wandb", "--out", str(sweep / "report_cli")]) == 0
    out = capsys.readouterr().out
    assert f"report: {sweep / 'report_cli' / 'report.html'}" in out
    assert "| world | MinorSFT | 3e-3 | 0.1 | 1e-3 | 1e-2 |" in out  # threshold, β, bracket


def test_no_finished_run_exits_non_zero_with_one_line(tmp_path):
    pending = tmp_path / "run0" / ".hydra"
    pending.mkdir(parents=True)
    (pending / "config.yaml").write_text("method: sft\n")
    p = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(tmp_path), "--no-wandb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"analysis.report: {tmp_path}: no finished run (no valid result.json); found 1 unfinished run dir(s)"
    ]
    assert not (tmp_path / "report").exists()
    assert main([str(tmp_path / "missing"), "--no-wandb"]) == 2


def test_partial_sweep_is_marked_incomplete_and_corrupt_file_listed(tmp_path):
    for lr, acc in ((1e-4, 0.3), (1e-3, 0.6), (1e-2, 0.2)):
        write_run(tmp_path / f"sft_{lr:g}", method="sft", lr=lr, accuracy=acc)
    (tmp_path / "minor_pending" / ".hydra").mkdir(parents=True)
    (tmp_path / "minor_pending" / ".hydra" / "config.yaml").write_text("method: minor_sft\n")
    bad = write_run(tmp_path / "broken", method="minor_sft", lr=1e-3, beta=0.1, accuracy=0.5)
    (bad / "result.json").write_text("{")
    rep = build_report(tmp_path, use_wandb=False)
    assert rep.threshold["note"].iloc[0].endswith("sweep incomplete (1 run(s) unfinished)")
    page = rep.html.read_text()
    assert "Incomplete sweep: 1 run(s) have not finished" in page and "minor_pending" in page
    assert f"{bad / 'result.json'}: not valid JSON" in page
    assert rep.messages and rep.messages[0].startswith(f"skipped: {bad / 'result.json'}")
    assert (
        (tmp_path / "report" / "threshold.md")
        .read_text()
        .startswith("## Learning-rate threshold per method (incomplete)")
    )
    claims = (tmp_path / "report" / "claims.csv").read_text()
    assert "needs MinorSFT and a baseline" in claims


def test_identical_dpo_and_minor_curves_get_the_single_token_note(tmp_path):
    for method, beta in (("dpo_sft", 0.1), ("minor_sft", 0.1)):
        for lr, acc in ((1e-4, 0.3), (1e-3, 0.6), (1e-2, 0.2)):
            write_run(tmp_path / f"{method}_{lr:g}", method=method, lr=lr, beta=beta, accuracy=acc)
    rep = build_report(tmp_path, use_wandb=False)
    assert "identical accuracy at all 3 shared" in (rep.out_dir / "report.md").read_text()


def test_notes_name_the_embedded_world_by_its_hash(tmp_path):
    digest = "ab" * 32
    for lr, acc in ((1e-4, 0.3), (1e-3, 0.6)):
        run = write_run(tmp_path / f"sft_{lr:g}", method="sft", lr=lr, beta=None, accuracy=acc, world_seed=0)
        result = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**result, "world_sha256": digest}))
    rep = build_report(tmp_path, use_wandb=False)
    assert f"embedded world sha256 {digest} (result.json world_sha256)" in (rep.out_dir / "report.md").read_text()


def test_wandb_summary_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for lr, acc in ((1e-4, 0.3), (1e-3, 0.6), (1e-2, 0.2)):
        write_run(tmp_path / f"sft_{lr:g}", method="sft", lr=lr, accuracy=acc, group="exp1")
    rep = build_report(tmp_path, use_wandb=True)
    assert any(m.startswith("W&B summary run 'exp1-report' logged (offline)") for m in rep.messages), (
        rep.messages
    )
    runs = list((tmp_path / "report" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.skipif(
    find_browser() is None, reason="no Chromium installed (Debian: apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(demo, tmp_path):
    _, rep = demo
    shot = tmp_path / "report.png"
    res = check_render(rep.html, screenshot=shot)
    assert res.ok, res.message
    assert res.images == 3 and res.broken_images == 0 and res.js_errors == 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    find_browser() is None, reason="no Chromium installed (Debian: apt-get install -y chromium)"
)
def test_browser_check_catches_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(html_page("t", "m", '<img src="data:image/png;base64,bm90IGEgcG5n" alt="not a png">'))
    res = check_render(page)
    assert not res.ok and res.broken_images == 1


def test_rows_the_data_loader_rejected_are_named_in_the_reports_notes(tmp_path):
    """A job records the data loader's warnings (result.json data_warnings); the report lists each once."""
    sweep = demo_sweep(tmp_path / "sweep", n_questions=60)
    line = "data/train.csv: rejected 5 rows of 48: answer not in A-D (rows 2, 3, 4, 5, 6)"
    for path in sorted(sweep.rglob("result.json"))[:2]:  # two runs of one data set: the same line, listed once
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "data_warnings": [line]}))
    report_md = (build_report(sweep, use_wandb=False).out_dir / "report.md").read_text()
    assert report_md.count(f"data: {line}") == 1
