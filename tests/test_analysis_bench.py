"""tests/bench_report.py (the report benchmark of docs/benchmarks.md) at a tiny scale: it writes what it says
and the report reads all of it."""

from __future__ import annotations

import json

from bench_report import CONFIGS, main


def test_report_benchmark_runs_at_a_tiny_scale_and_each_call_writes_its_own_result(tmp_path):
    out = main(["--runs", "2", "--questions", "50", "--seeds", "1", "--out", str(tmp_path / "r.json")])
    assert out["runs"] == 2 and out["points"] == 2 and out["report_files"] > 10
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(out))
    # the second call writes its own file (r2.json), leaving the first call's as it was
    out = main(["--runs", str(2 * len(CONFIGS) * 3), "--questions", "60", "--seeds", "3",
                "--out", str(tmp_path / "r2.json")])
    assert out["runs"] == 2 * len(CONFIGS) * 3 and out["points"] == 2 * len(CONFIGS)
    assert json.loads((tmp_path / "r2.json").read_text()) == json.loads(json.dumps(out))
    assert json.loads((tmp_path / "r.json").read_text())["runs"] == 2  # the first file untouched
