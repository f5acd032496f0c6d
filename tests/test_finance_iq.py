"""FinanceIQ as published (../shared/data/finance_iq): rows, fields, subjects, the default splits, one job."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from tiny_chat import save_tiny_chat_checkpoint

from conftest import REPO_ROOT
from trainers.data.mcq import DataError, load_mcq, normalize_text
from trainers.job.config import compose_job
from trainers.job.prepare import load_items
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_jsonl

FINANCE_IQ = REPO_ROOT.parent / "shared" / "data" / "finance_iq"
pytestmark = pytest.mark.skipif(not FINANCE_IQ.is_dir(), reason=f"FinanceIQ not found at {FINANCE_IQ}")

# The data config's own mapping, so these tests check what `data=finance_iq` does.
COLUMNS = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "data" / "finance_iq.yaml").columns)

TEST_ROWS = {
    "保险从业资格CICE": 696, "基金从业资格": 872, "期货从业资格": 433, "注册会计师（CPA）": 1311, "理财规划师": 295,
    "税务师": 488, "精算师-金融数学": 88, "经济师": 520, "证券从业资格": 1176, "银行从业资格": 1244,
}
SUBJECTS = sorted(TEST_ROWS)


def data_cfg(*overrides: str):
    return compose_job(["data=finance_iq", f"data.path={FINANCE_IQ}", *overrides]).data


@pytest.mark.parametrize(("split", "per_subject"), [("dev", dict.fromkeys(SUBJECTS, 5)), ("test", TEST_ROWS)])
def test_rows_per_split_and_subject_all_kept(split: str, per_subject: dict[str, int]) -> None:
    items, report = load_mcq(FINANCE_IQ, split, columns=COLUMNS)
    total = sum(per_subject.values())
    assert (report.source, report.n_rows, report.n_kept, report.rejected) == (f"finance_iq/{split}", total, total, {})
    assert report.n_rows == report.n_kept + sum(report.rejected.values())
    assert dict(Counter(i.subject for i in items)) == per_subject
    assert report.n_duplicate_questions == 0 and report.lines() == []


@pytest.mark.parametrize(
    ("split", "multiline"), [("dev", {"question": 4}), ("test", {"question": 615, "D": 3, "A": 2})]
)
def test_every_field_as_an_independent_parser_reads_it(split: str, multiline: dict[str, int]) -> None:
    """pandas' C parser reads the same rows and fields, newlines inside quoted fields included."""
    items = {i.id: i for i in load_mcq(FINANCE_IQ, split, columns=COLUMNS)[0]}
    seen: Counter[str] = Counter()
    n_rows = 0
    for path in sorted((FINANCE_IQ / split).glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert list(frame.columns) == ["Unnamed: 0", "Question", "A", "B", "C", "D", "Answer"]
        n_rows += len(frame)
        for raw in frame.itertuples(index=False):
            it = items[f"{path.stem}/{raw[0]}"]
            assert (it.question, it.options, it.answer) == (raw.Question, dict(zip("ABCD", raw[2:6], strict=True)),
                                                            raw.Answer)
            seen.update(name for name, text in {"question": it.question, **it.options}.items() if "\n" in text)
    assert n_rows == len(items)
    assert seen == multiline


def test_subjects_and_ids_from_the_files() -> None:
    for split in ("dev", "test"):
        items, _ = load_mcq(FINANCE_IQ, split, columns=COLUMNS)
        assert sorted({i.subject for i in items}) == sorted(p.stem for p in (FINANCE_IQ / split).glob("*.csv"))
        for subject in SUBJECTS:
            ids = [i.id for i in items if i.subject == subject]
            assert ids == [f"{subject}/{n}" for n in range(len(ids))]
    items, report = load_mcq(FINANCE_IQ, "test", subjects=["精算师-金融数学"], columns=COLUMNS)
    assert report.n_rows == len(items) == 88


def test_files_without_the_column_mapping_name_the_fix() -> None:
    with pytest.raises(DataError, match=r"lacks required columns id, question, answer \(has: '', 'Question', .*"
                                        r"set data\.columns to map them$"):
        load_mcq(FINANCE_IQ, "test")


def test_default_config_splits_test_by_subject_without_overlap() -> None:
    cfg = data_cfg()
    train, eval_ = load_items(cfg)
    assert (cfg.train_split, cfg.n_train, cfg.n_eval, len(train), len(eval_)) == ("test", None, 2000, 5123, 2000)
    assert not {normalize_text(i.question) for i in train} & {normalize_text(i.question) for i in eval_}
    all_ids = {i.id for i in load_mcq(FINANCE_IQ, "test", columns=COLUMNS)[0]}
    assert {i.id for i in train} | {i.id for i in eval_} == all_ids
    eval_per_subject = Counter(i.subject for i in eval_)
    assert eval_per_subject == {
        "保险从业资格CICE": 195, "基金从业资格": 245, "期货从业资格": 122, "注册会计师（CPA）": 368, "理财规划师": 83,
        "税务师": 137, "精算师-金融数学": 25, "经济师": 146, "证券从业资格": 330, "银行从业资格": 349,
    }
    assert load_items(cfg) == (train, eval_)
    assert load_items(data_cfg("data.sample_seed=1"))[1] != eval_


def test_sampled_train_keeps_subject_shares() -> None:
    train, eval_ = load_items(data_cfg("data.n_train=1000", "data.n_eval=500"))
    # largest remainders by hand: 500 of the test split's 7,123 rows by subject share, then 1,000 of the rest
    assert Counter(i.subject for i in eval_) == {
        "保险从业资格CICE": 49, "基金从业资格": 61, "期货从业资格": 30, "注册会计师（CPA）": 92, "理财规划师": 21,
        "税务师": 34, "精算师-金融数学": 6, "经济师": 37, "证券从业资格": 83, "银行从业资格": 87,
    }
    assert Counter(i.subject for i in train) == {
        "保险从业资格CICE": 98, "基金从业资格": 122, "期货从业资格": 61, "注册会计师（CPA）": 184, "理财规划师": 41,
        "税务师": 69, "精算师-金融数学": 12, "经济师": 73, "证券从业资格": 165, "银行从业资格": 175,
    }
    assert len(eval_) == 500


def test_dev_as_sanity_eval_split() -> None:
    train, eval_ = load_items(data_cfg("data.eval_split=dev", "data.n_eval=null"))
    assert (len(train), len(eval_)) == (7123, 50)
    assert {i.id for i in eval_} == {i.id for i in load_mcq(FINANCE_IQ, "dev", columns=COLUMNS)[0]}


def test_split_errors_name_the_config_field() -> None:
    with pytest.raises(DataError, match=r"^data\.eval_split='tset' not found .*available splits: dev, test$"):
        load_items(data_cfg("data.eval_split=tset"))
    with pytest.raises(DataError, match=r"^data\.train_split='train' not found"):
        load_items(data_cfg("data.train_split=train"))
    with pytest.raises(DataError, match=r"^data\.n_eval=2000 but only 50 items are available; lower data\.n_eval$"):
        load_items(data_cfg("data.eval_split=dev"))


@pytest.fixture(scope="module")
def tiny_chat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    items, _ = load_mcq(FINANCE_IQ, "test", columns=COLUMNS)
    texts = [" ".join([i.question, *i.options.values()]) for i in items[::5]]
    return save_tiny_chat_checkpoint(tmp_path_factory.mktemp("qwen2-tiny-fiq"), texts)


@pytest.mark.slow
def test_finance_iq_subset_trains_end_to_end(job_cfg, tiny_chat_checkpoint) -> None:
    cfg = job_cfg(
        "data=finance_iq", f"data.path={FINANCE_IQ}", "data.n_train=48", "data.n_eval=40",
        f"model.path={tiny_chat_checkpoint}", "model.name=qwen2-tiny", "method=minor_sft", "method.beta=0.1",
    )
    result = run_job(cfg)
    print(f"finance_iq e2e: status={result['status']} train_n={result['train_n']} eval_n={result['eval_n']} "
          f"base_accuracy={result.get('base_accuracy')} accuracy={result['accuracy']} steps={result['steps']}")
    assert result["status"] == "ok" and result["dataset"] == "finance_iq"
    assert (result["train_n"], result["eval_n"]) == (48, 40)
    train_items, eval_items = load_items(cfg.data)
    assert {i.question for i in train_items}.isdisjoint({i.question for i in eval_items})
    predictions = read_jsonl(Path(cfg.run_dir) / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [i.id for i in eval_items]
    # 40 by largest remainders, by hand (精算师-金融数学's 88 of 7,123 rows earn none of the 40)
    assert Counter(p["subject"] for p in predictions) == {
        "保险从业资格CICE": 4, "基金从业资格": 5, "期货从业资格": 2, "注册会计师（CPA）": 7, "理财规划师": 2,
        "税务师": 3, "经济师": 3, "证券从业资格": 7, "银行从业资格": 7,
    }
    assert set(result["subject_accuracy"]) == {p["subject"] for p in predictions}
    metrics = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")
    assert metrics and abs(metrics[0]["m_theta"]) < 1e-4
