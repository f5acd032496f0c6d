"""analysis.subjects: per-category and per-subject accuracy of each method's best configuration, on the
report split, against a synthetic sweep whose truth per subject is known."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.estimate import estimate
from analysis.report import build_report
from analysis.rundirs import load_sweep
from analysis.subjects import FEW_QUESTIONS, subject_tables
from synthetic_runs import write_run

SUBJECTS = ["algebra", "law", "poetry", "tiny"]
INFO = {"algebra": {"name": "代数", "category": "STEM"}, "law": {"name": "法学", "category": "Social Sciences"},
        "poetry": {"name": "诗歌", "category": "Humanities"}, "tiny": {"name": "小", "category": "STEM"}}


def _correct(per_subject: dict[str, float], subjects: list[str], split: list[str]) -> np.ndarray:
    """Correctness per question: on the report split, the first round(p·n) questions of each subject right."""
    out = np.zeros(len(subjects), dtype=bool)
    for s, p in per_subject.items():
        idx = [i for i, x in enumerate(subjects) if x == s and split[i] == "report"]
        out[idx[: round(p * len(idx))]] = True
        sel = [i for i, x in enumerate(subjects) if x == s and split[i] == "select"]
        out[sel[: round(0.5 * len(sel))]] = True
    return out


def _sweep(tmp_path):
    # 40 questions each for three subjects, 6 for "tiny"; every other question is on the report split
    subjects = [s for s in SUBJECTS[:3] for _ in range(40)] + ["tiny"] * 6
    split = ["select" if i % 2 == 0 else "report" for i in range(len(subjects))]
    truth = {"algebra": 0.8, "law": 0.5, "poetry": 0.25, "tiny": 1 / 3}
    for seed in (0, 1):
        write_run(tmp_path / f"minor_lr1e-3_s{seed}", method="minor_sft", lr=1e-3, beta=0.1, seed=seed,
                  correct=_correct(truth, subjects, split), subjects=None, split=split, subject_info=INFO)
        # a worse lr, so that the peak is the one above
        write_run(tmp_path / f"minor_lr1e-2_s{seed}", method="minor_sft", lr=1e-2, beta=0.1, seed=seed,
                  correct=np.zeros(len(subjects), dtype=bool), split=split, subject_info=INFO)
    # write_run assigns subjects round-robin; rewrite them as laid out above
    import json

    for path in tmp_path.rglob("predictions.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row, subject in zip(rows, subjects, strict=True):
            row["subject"] = subject
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return truth


def test_per_subject_and_per_category_accuracy_match_the_truth(tmp_path):
    truth = _sweep(tmp_path)
    sweep = load_sweep(tmp_path)
    per_category, per_subject = subject_tables(estimate(sweep, n_resamples=200), sweep)
    by_subject = per_subject.set_index("subject")
    assert list(per_subject["method"].unique()) == ["MinorSFT"]
    assert per_subject["config"].unique().tolist() == ["lr 0.001, β 0.1"]  # the best configuration
    for subject, p in truth.items():
        row = by_subject.loc[subject]
        assert row["accuracy"] == pytest.approx(p)
        assert row["n_questions"] == (20 if subject != "tiny" else 3) and row["n_seeds"] == 2
        assert row["name"] == INFO[subject]["name"] and row["category"] == INFO[subject]["category"]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert by_subject.loc["tiny", "note"] == "only 3 questions: too few to rank this group"
    assert by_subject.loc["algebra", "note"] == ""
    assert 3 < FEW_QUESTIONS <= 20
    by_category = per_category.set_index("category")
    assert set(by_category.index) == {"STEM", "Social Sciences", "Humanities"}
    stem = by_category.loc["STEM"]  # algebra (16 of 20 right) and tiny (1 of 3 right)
    assert stem["n_subjects"] == 2 and stem["n_questions"] == 23
    assert stem["accuracy"] == pytest.approx(17 / 23)


def test_report_has_the_tables_in_html_and_csv_but_not_on_the_console(tmp_path, capsys):
    _sweep(tmp_path / "sweep")
    rep = build_report(tmp_path / "sweep", use_wandb=False)
    assert (rep.out_dir / "accuracy_per_category.csv").is_file()
    assert (rep.out_dir / "accuracy_per_subject.csv").is_file()
    html = rep.html.read_text(encoding="utf-8")
    assert 'id="accuracy_per_subject"' in html and "诗歌" in html
    assert "per subject" not in capsys.readouterr().out


def test_no_subject_tables_when_the_data_has_no_subjects(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"r{seed}", method="sft", lr=1e-3, seed=seed, accuracy=0.6, split=True)
    sweep = load_sweep(tmp_path)
    per_category, per_subject = subject_tables(estimate(sweep, n_resamples=100), sweep)
    assert per_category.empty and per_subject.empty
