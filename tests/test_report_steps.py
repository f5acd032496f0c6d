"""`train.report_steps`: the selection accuracy alone, between evaluations, for a pruner or early stopping
to judge a running job by; the same number an evaluation at that step gives, and training unchanged."""

from __future__ import annotations

from pathlib import Path

from trainers.job.callbacks import ReportSelection
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_jsonl, request_stop


def test_a_selection_report_equals_the_evaluations_selection_accuracy_at_the_same_step(job_cfg):
    evaluated = run_job(job_cfg("train.eval_steps=3", run="eval"))
    reported = run_job(job_cfg("train.eval_steps=0", "train.report_steps=3", run="report"))
    by_step = {name: {r["step"]: r for r in read_jsonl(Path(job_cfg(run=name).run_dir) / "eval.jsonl")}
               for name in ("eval", "report")}
    assert sorted(by_step["report"]) == [0, 3, 6]  # base, the report at step 3, the final evaluation
    report, evaluation = by_step["report"][3], by_step["eval"][3]
    assert set(report) == {"step", "select_accuracy", "select_n"}  # prompts only: no mθ, no report split
    assert (report["select_accuracy"], report["select_n"]) == (evaluation["select_accuracy"], evaluation["select_n"])
    assert 0 < report["select_n"] < evaluation["n"]
    assert reported["accuracy"] == evaluated["accuracy"]  # a scoring pass leaves training as it was
    assert reported["m_theta"] == evaluated["m_theta"]


def test_selection_reports_skip_the_steps_that_evaluate_or_end_training(job_cfg):
    run_job(job_cfg("train.eval_steps=2", "train.report_steps=1", "train.max_steps=5", run="both"))
    rows = read_jsonl(Path(job_cfg(run="both").run_dir) / "eval.jsonl")
    kinds = [(r["step"], "eval" if "accuracy" in r else "report") for r in rows]
    assert kinds == [(0, "eval"), (1, "report"), (2, "eval"), (3, "report"), (4, "eval"), (5, "eval")]


def test_a_job_stopped_after_a_selection_report_records_it_as_its_last_numbers(job_cfg, monkeypatch):
    cfg = job_cfg("train.eval_steps=0", "train.report_steps=2", "train.max_steps=6")
    run_dir = Path(cfg.run_dir)
    reported = ReportSelection.on_step_end

    def report_then_request(self, args, state, control, **kwargs):
        out = reported(self, args, state, control, **kwargs)
        if state.global_step == 2:
            request_stop(run_dir, "stopped", "past the threshold at step 2")
        return out

    monkeypatch.setattr(ReportSelection, "on_step_end", report_then_request)
    result = run_job(cfg)
    assert (result["status"], result["steps"]) == ("stopped", 3)
    last = read_jsonl(run_dir / "eval.jsonl")[-1]
    assert last["step"] == 2
    assert result["last_eval"] == {"step": 2, "accuracy": None, "select_accuracy": last["select_accuracy"],
                                   "m_theta": None}

