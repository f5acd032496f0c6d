"""analysis.rundirs: discovery at any depth, validation, corrupt files reported by path and skipped."""

from __future__ import annotations

import json

from analysis.rundirs import load_sweep
from synthetic_runs import write_run


def test_finds_runs_at_any_depth_and_skips_report_dirs(tmp_path):
    write_run(tmp_path / "a", method="sft", lr=1e-3, accuracy=0.5)
    write_run(tmp_path / "x" / "y" / "z", method="minor_sft", lr=1e-3, beta=0.1, accuracy=0.6)
    write_run(tmp_path / "report" / "old", method="sft", lr=1e-2, accuracy=0.1)  # a report dir is never a run
    s = load_sweep(tmp_path)
    assert sorted(s.runs["run"]) == ["a", "x/y/z"]
    assert s.is_complete and s.problems == []
    assert set(s.metrics["run"]) == {"a", "x/y/z"}
    assert s.evals[s.evals["step"] == 0]["accuracy"].tolist() == [0.25, 0.25]
    assert s.runs.set_index("run").loc["x/y/z", "method_name"] == "MinorSFT"


def test_unfinished_run_is_incomplete_but_a_hydra_root_is_not(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("sweep: root\n")
    write_run(tmp_path / "done", method="sft", lr=1e-3, accuracy=0.5)
    pending = tmp_path / "pending"
    (pending / ".hydra").mkdir(parents=True)
    (pending / ".hydra" / "config.yaml").write_text("method: sft\n")
    (pending / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    prepare = tmp_path / "_prepare" / "0"  # the sweeper's own prepare job: never a run
    (prepare / ".hydra").mkdir(parents=True)
    (prepare / ".hydra" / "config.yaml").write_text("prepare_only: true\n")
    s = load_sweep(tmp_path)
    assert s.incomplete == ["pending"]
    assert not s.is_complete
    assert list(s.runs["run"]) == ["done"]


def test_corrupt_result_json_is_reported_by_path_and_skipped(tmp_path):
    write_run(tmp_path / "good", method="sft", lr=1e-3, accuracy=0.5)
    bad = write_run(tmp_path / "bad", method="sft", lr=1e-2, accuracy=0.4)
    (bad / "result.json").write_text('{"method": "sft", "lr": 0.01, "sta')  # truncated
    s = load_sweep(tmp_path)
    assert list(s.runs["run"]) == ["good"]
    assert len(s.problems) == 1
    assert s.problems[0].startswith(f"{bad / 'result.json'}: not valid JSON")
    assert s.problems[0].endswith("run skipped")


def test_invalid_fields_are_reported(tmp_path):
    for name, patch in {
        "nolr": {"lr": None},
        "status": {"status": "done"},
        "noacc": {"accuracy": None},
        "list": None,
    }.items():
        d = write_run(tmp_path / name, method="sft", lr=1e-3, accuracy=0.5)
        data = json.loads((d / "result.json").read_text())
        data = [1, 2] if patch is None else {**data, **patch}
        (d / "result.json").write_text(json.dumps(data))
    s = load_sweep(tmp_path)
    assert s.runs.empty
    msgs = "\n".join(s.problems)
    assert "nolr/result.json: 'lr' must be a positive number" in msgs
    assert "status/result.json: 'status' must be one of ok, diverged, failed, stopped, pruned, got 'done'" in msgs
    assert "noacc/result.json: status ok but 'accuracy' is None" in msgs
    assert "list/result.json: not a JSON object" in msgs


def test_truncated_jsonl_lines_are_skipped_with_line_numbers(tmp_path):
    d = write_run(tmp_path / "r", method="sft", lr=1e-3, accuracy=0.5, n_questions=10)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "m_the')
    with open(d / "predictions.jsonl", "a") as f:
        f.write('{"id": "q99", "corr')
    s = load_sweep(tmp_path)
    n_lines = len((d / "metrics.jsonl").read_text().splitlines())
    assert len(s.problems) == 1
    assert s.problems[0].startswith(f"{d / 'metrics.jsonl'}:{n_lines}: not valid JSON (")
    assert s.problems[0].endswith("; line skipped")
    assert 99 not in set(s.metrics["step"])
    preds = s.predictions("r")
    assert len(preds) == 10 and preds.mean() == 0.5
    assert any(p.startswith(f"{d / 'predictions.jsonl'}:11:") for p in s.problems)


def test_non_ok_runs_have_no_accuracy(tmp_path):
    write_run(tmp_path / "d", method="sft", lr=1e-1, status="diverged")
    s = load_sweep(tmp_path)
    r = s.runs.iloc[0]
    assert r["status"] == "diverged" and r["accuracy"] != r["accuracy"]  # NaN
    assert s.predictions("d") is None
