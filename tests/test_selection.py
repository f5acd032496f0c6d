"""trainers.data.selection: a seeded, stable select/report split of the eval questions, written by every job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trainers.data.selection import REPORT, SELECT, assign_split, mark_splits, split_accuracy, validate_split_config
from trainers.recipe import run_job
from trainers.runtime.errors import ConfigError
from trainers.runtime.run_dir import read_jsonl


def test_assignment_is_stable_seeded_and_near_the_fraction():
    ids = [f"q{i}" for i in range(4000)]
    a = [assign_split(i, 0.5, 0) for i in ids]
    assert a == [assign_split(i, 0.5, 0) for i in ids]  # the same for every job
    assert a.count(SELECT) / len(a) == pytest.approx(0.5, abs=0.03)
    assert [assign_split(i, 0.3, 0) for i in ids].count(SELECT) / len(ids) == pytest.approx(0.3, abs=0.03)
    other = [assign_split(i, 0.5, 1) for i in ids]
    assert sum(x != y for x, y in zip(a, other, strict=True)) > 1000  # another seed, another split
    # a larger fraction only moves questions from report to select (nested splits)
    assert all(assign_split(i, 0.7, 0) == SELECT for i, s in zip(ids, a, strict=True) if s == SELECT)


def test_mark_splits_and_split_accuracy():
    rows = [{"id": f"q{i}", "correct": i % 3 == 0} for i in range(300)]
    marked = mark_splits(rows, 0.5, 0)
    assert "split" not in rows[0] and {r["split"] for r in marked} == {SELECT, REPORT}
    sel = [r["correct"] for r in marked if r["split"] == SELECT]
    assert split_accuracy(marked, SELECT) == pytest.approx(sum(sel) / len(sel))
    assert split_accuracy([], REPORT) is None


@pytest.mark.parametrize("field, value", [("select_fraction", 0.0), ("select_fraction", 1), ("select_fraction", "x"),
                                          ("select_seed", 0.5)])
def test_bad_split_config_is_one_line_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"data.{field}="):
        validate_split_config(OmegaConf.create({field: value}))


def test_job_writes_the_split_and_both_accuracies(job_cfg):
    cfg = job_cfg("method=sft", "train.lr=1e-3", "data.select_fraction=0.5")
    result = run_job(cfg)
    run_dir = Path(cfg.run_dir)
    predictions = read_jsonl(run_dir / "predictions.jsonl")
    assert {p["split"] for p in predictions} == {SELECT, REPORT}
    assert all(p["split"] == assign_split(p["id"], 0.5, 0) for p in predictions)
    saved = json.loads((run_dir / "result.json").read_text())
    for split, key in ((SELECT, "select_accuracy"), (REPORT, "report_accuracy")):
        part = [p["correct"] for p in predictions if p["split"] == split]
        assert saved[key] == pytest.approx(sum(part) / len(part)) == result[key]
    metrics = [m for m in read_jsonl(run_dir / "metrics.jsonl") if m.get("m_theta") is not None]
    late = [m["m_theta"] for m in metrics if m["step"] >= 0.75 * metrics[-1]["step"]]
    assert saved["train_m_theta"] == pytest.approx(sum(late) / len(late))
