"""ceval-exam from its published files (../shared/data/ceval_exam): exact counts, multi-line cells as
pandas reads them, the refusal of the answerless test split, and paper_ceval_exam end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest
from tiny_chat import save_tiny_chat_checkpoint

from conftest import REPO_ROOT
from trainers.data.mcq import load_mcq, read_subject_info
from trainers.job.validate import validate_config
from trainers.runtime.errors import ConfigError

CEVAL = REPO_ROOT.parent / "shared" / "data" / "ceval_exam"
# the refusals of the test split read no file: they run without the data too
needs_files = pytest.mark.skipif(not CEVAL.is_dir(), reason=f"ceval-exam not found at {CEVAL}")
CATEGORIES = {"STEM", "Social Sciences", "Humanities", "Other"}


@needs_files
def test_published_files_load_with_exact_counts_and_no_row_rejected():
    dev, dev_report = load_mcq(CEVAL, "dev")
    val, val_report = load_mcq(CEVAL, "val")
    subjects = Counter(i.subject for i in dev)
    assert len(subjects) == 52 and set(subjects.values()) == {5}
    assert (len(dev), dev_report.n_rows, dev_report.rejected) == (260, 260, {})
    assert (len(val), val_report.n_rows, val_report.rejected) == (1346, 1346, {})
    assert {i.subject for i in val} == set(subjects)
    assert len({i.id for i in val}) == 1346  # <subject>/<id>: unique across the 52 files
    tests = sorted((CEVAL / "test").glob("*.csv"))
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in tests]
    assert len(tests) == 52 and sum(len(f) for f in frames) == 12342
    assert not any("answer" in f.columns for f in frames)  # the benchmark withholds them
    info = read_subject_info(CEVAL, "mapping.json")
    assert set(info) == set(subjects) and {v["category"] for v in info.values()} == CATEGORIES
    assert info["advanced_mathematics"] == {"name": "高等数学", "category": "STEM"}


@needs_files
def test_multiline_cells_are_kept_as_pandas_reads_them():
    items = {i.id: i for i in load_mcq(CEVAL, "dev")[0]}
    multiline = 0
    for path in sorted((CEVAL / "dev").glob("*_dev.csv")):
        subject = path.stem.removesuffix("_dev")
        for row in pd.read_csv(path, dtype=str, keep_default_na=False).itertuples():
            item = items[f"{subject}/{row.id}"]
            assert (item.question, item.explanation) == (row.question, row.explanation)
            assert item.options == {"A": row.A, "B": row.B, "C": row.C, "D": row.D} and item.answer == row.answer
            multiline += "\n" in row.explanation or "\n" in row.question
    assert multiline > 0  # the dev files do have multi-line cells, and they came through whole


@pytest.mark.parametrize("field", ["eval_split", "train_split"])
def test_the_answerless_test_split_is_refused_in_one_line(job_cfg, field, tmp_path):
    cfg = job_cfg("data=ceval_exam", f"data.path={tmp_path / 'ceval_exam'}", f"data.{field}=test")
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith(f"data.{field}=test: ceval_exam withholds the answers of its test split")
    assert "\n" not in message


def test_cli_refuses_the_test_split_before_anything_runs(tiny_world, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "trainers.train", "data=ceval_exam", f"data.path={tmp_path / 'ceval_exam'}",
         "data.eval_split=test",
         "logger=none", f"paths.embedded_dir={tiny_world.root}", "model.embedded=false",
         f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'outputs'}",
         f"run_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: data.eval_split=test: ceval_exam withholds the answers of its test split (its files have no "
        "answer column), so it can neither train nor score; use another split (train_split=val; "
        "data.eval_split=null carves the eval questions out of the training split)"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@needs_files
@pytest.mark.slow
def test_paper_ceval_exam_runs_end_to_end_on_the_real_files(tmp_path):
    """Plumbing only: a tiny random Qwen2 and a tokenizer trained here; its accuracy means nothing."""
    items, _ = load_mcq(CEVAL, "val")
    model = save_tiny_chat_checkpoint(tmp_path / "qwen2-tiny",
                                      [" ".join([i.question, *i.options.values()]) for i in items])
    sweep_dir = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "trainers.train", "-m", "experiment=paper_ceval_exam", f"data.path={CEVAL}",
         f"model.path={model}", "model.name=qwen2-tiny", "model.gradient_checkpointing=false", "train.bf16=false",
         "strategy=single", "plan.on_gpu=false",
         "train.max_steps=2", "train.global_batch_size=8", "train.per_device_batch_size=8",
         "train.eval_batch_size=32", "train.eval_steps=0", "train.save_steps=0", "train.num_threads=1",
         "data.n_train=64", "data.n_eval=208", "logger=none", "~grid.methods.dpo_sft", "~grid.refine",
         "grid.methods.sft.lr=[1e-4]", "grid.methods.minor_sft.lr=[1e-4]", "grid.methods.minor_sft.beta=[0.1]",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}",
         "hydra.sweeper.poll_interval_s=0.5"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sweep_dir.rglob("result.json") if "_prepare" not in p.parts]
    assert len(results) == 2 and {r["status"] for r in results} == {"ok"}
    assert all(r["dataset"] == "ceval_exam" and r["eval_n"] == 208 for r in results)
    assert all(set(r["subject_info"]) == set(r["subject_accuracy"]) for r in results)
    report = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep_dir), "--no-wandb"],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    per_category = pd.read_csv(sweep_dir / "report" / "accuracy_per_category.csv")
    per_subject = pd.read_csv(sweep_dir / "report" / "accuracy_per_subject.csv")
    for method, rows in per_category.groupby("method"):
        assert set(rows["category"]) == CATEGORIES
        assert rows["n_questions"].sum() == per_subject.loc[per_subject["method"] == method, "n_questions"].sum()
    print(per_category[["method", "category", "n_subjects", "n_questions", "accuracy", "ci_low", "ci_high"]]
          .to_string(index=False))
