"""tests/bench_report.py (the report benchmark of docs/benchmarks.md) at a tiny scale: it writes what it says
and the report reads all of it."""

from __future__ import annotations

from bench_report import CONFIGS, main


def test_report_benchmark_runs_at_a_tiny_scale(tmp_path):
    out = main(["--runs", "2", "--questions", "50", "--seeds", "1", "--out", str(tmp_path / "r.json")])
    assert out["runs"] == 2 and out["points"] == 2 and out["report_files"] > 10
    out = main(["--runs", str(2 * len(CONFIGS) * 3), "--questions", "60", "--seeds", "3"])
    assert out["runs"] == 2 * len(CONFIGS) * 3 and out["points"] == 2 * len(CONFIGS)
    assert (tmp_path / "r.json").exists()
