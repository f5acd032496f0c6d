"""Tests for trainers/data/mcq.py: the real FinEval files, then small constructed files per rule."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trainers.data.mcq import (
    OPTION_LETTERS,
    DataError,
    LoadReport,
    McqItem,
    drop_overlap,
    duplicate_questions,
    load_mcq,
    normalize_text,
    resolve_hub_path,
    sample_items,
    split_train_eval,
    subject_quotas,
)
from trainers.job.prepare import load_items

FINEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fineval"
HEADER = ["id", "question", "A", "B", "C", "D", "answer"]

needs_fineval = pytest.mark.skipif(not FINEVAL.is_dir(), reason=f"FinEval data not found at {FINEVAL}")


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER, bom: bool = True) -> Path:
    """A CSV as FinEval writes it: optional BOM, CRLF row ends, quoting only where needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh)  # default dialect ends rows with \r\n
        writer.writerow(header)
        writer.writerows(rows)
    return path


def row(id_: str, question: str = "q?", answer: str = "A", options: tuple[str, ...] = ("a", "b", "c", "d")):
    return [id_, question, *options, answer]


def item(id_: str, question: str) -> McqItem:
    return McqItem(id_, question, dict(zip(OPTION_LETTERS, "abcd", strict=True)), "A", "", "")


# --------------------------------------------------------------------------------------------- FinEval


@needs_fineval
@pytest.mark.parametrize(
    ("split", "n_rows"), [("dev", 170), ("val", 3340), ("test", 918), ("test_20pct", 918)]
)
def test_fineval_row_counts(split: str, n_rows: int) -> None:
    items, report = load_mcq(FINEVAL, split)
    assert (report.n_rows, report.n_kept, report.rejected) == (n_rows, n_rows, {})
    assert len(items) == n_rows
    assert len({i.id for i in items}) == n_rows


@needs_fineval
def test_fineval_test_alias_reads_test_20pct_dir() -> None:
    via_alias, report = load_mcq(FINEVAL, "test")
    assert report.source == "fineval/test_20pct"
    assert via_alias == load_mcq(FINEVAL, "test_20pct")[0]


@needs_fineval
def test_fineval_answers_and_subjects() -> None:
    mapping = json.loads((FINEVAL / "subject_mapping.json").read_text(encoding="utf-8"))
    assert len(mapping) == 34
    for split in ("dev", "val", "test"):
        items, _ = load_mcq(FINEVAL, split)
        assert {i.answer for i in items} == set(OPTION_LETTERS)
        assert {i.subject for i in items} == set(mapping)
    # val/investments_val.csv id 11 is written "D " in the file
    val = {i.id: i for i in load_mcq(FINEVAL, "val")[0]}
    assert val["investments/11"].answer == "D"


@needs_fineval
def test_fineval_bom_handled() -> None:
    raw = (FINEVAL / "dev" / "accounting_dev.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid,")
    items, _ = load_mcq(FINEVAL / "dev" / "accounting_dev.csv")
    assert [i.id for i in items] == [f"accounting/{n}" for n in range(5)]
    assert not any("\ufeff" in i.id for i in items)


@needs_fineval
def test_fineval_multiline_fields_intact() -> None:
    """77 fields hold a newline, all of them dev explanations; each reads back verbatim from the file."""
    per_column: Counter[str] = Counter()
    for split in ("dev", "val", "test_20pct"):
        for it in load_mcq(FINEVAL, split)[0]:
            fields = {"question": it.question, **it.options, "explanation": it.explanation}
            multiline = [name for name, text in fields.items() if "\n" in text]
            per_column.update(multiline)
            for name in multiline:
                (path,) = (FINEVAL / split).glob(f"{it.subject}_*.csv")
                with path.open(encoding="utf-8-sig", newline="") as fh:  # as on disk: \r\n row ends
                    raw = fh.read()
                assert '"' + fields[name].replace('"', '""') + '"' in raw  # one quoted field, unchanged
    assert per_column == {"explanation": 77}


@needs_fineval
def test_fineval_subject_filter() -> None:
    items, report = load_mcq(FINEVAL, "dev", subjects=["accounting", "auditing"])
    assert {i.subject for i in items} == {"accounting", "auditing"}
    assert report.n_rows == len(items) == 10


# --------------------------------------------------------------------------------------------- parsing


def test_answers_normalised_and_ids_kept_as_written(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", [row("007", answer=" b "), row("8", answer="c"), row("9", answer="D\n")])
    items, report = load_mcq(tmp_path, "val")
    assert [(i.id, i.answer, i.subject) for i in items] == [("007", "B", ""), ("8", "C", ""), ("9", "D", "")]
    assert report.rejected == {}


def test_quoted_newlines_and_no_bom(tmp_path: Path) -> None:
    question = 'line one\r\nline "two", with comma\n'
    write_csv(tmp_path / "x_dev.csv", [row("1", question=question)], bom=False)
    (it,), _ = load_mcq(tmp_path / "x_dev.csv", "dev")
    assert (it.question, it.explanation, it.subject, it.id) == (question, "", "x", "x/1")


def test_explanation_column_read(tmp_path: Path) -> None:
    write_csv(tmp_path / "dev.csv", [[*row("1"), "because\nreasons"]], header=[*HEADER, "explanation"])
    (it,), _ = load_mcq(tmp_path, "dev")
    assert it.explanation == "because\nreasons"


def test_rejected_rows_counted_by_reason(tmp_path: Path) -> None:
    rows = [
        row("1"),
        row("2", question="  "),
        row("3", options=("a", "", "c", "d")),
        row("4", answer="E"),
        row("5", answer=""),
        row("1", question="another"),
        row(""),
        [*row("6"), "extra"],
        row("7", answer="AB"),
    ]
    write_csv(tmp_path / "val" / "acc_val.csv", rows)
    items, report = load_mcq(tmp_path, "val")
    assert [i.id for i in items] == ["acc/1"]
    assert items[0].question == "q?"  # the first row with a duplicated id is the one kept
    assert (report.n_rows, report.n_kept) == (9, 1)
    assert report.rejected == {
        "empty question": 1,
        "empty option": 1,
        "answer not in A-D": 3,
        "duplicate id (first row kept)": 1,
        "empty id": 1,
        "more fields than the header": 1,
    }
    lines = report.lines()
    assert len(lines) == 6
    name = tmp_path.name
    assert f"rejected 3 rows of {name}/val: answer not in A-D (e.g. row id 4 in val/acc_val.csv)" in lines
    assert f"rejected 1 rows of {name}/val: empty id (e.g. data row 7 in val/acc_val.csv)" in lines


def test_every_row_rejected_is_an_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", [row("1", answer="X"), row("2", answer="5")])
    with pytest.raises(DataError, match=r"every row .* rejected .*answer not in A-D"):
        load_mcq(tmp_path, "val")


def test_header_only_file_is_an_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", [])
    with pytest.raises(DataError, match="no data rows"):
        load_mcq(tmp_path)


def test_missing_columns_named(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "dev" / "acc_dev.csv",
        [["1", "q", "a", "c", "d"]],
        header=["id", "question", "A", "C", "D"],
    )
    with pytest.raises(DataError, match=r"dev/acc_dev\.csv lacks required columns B, answer") as exc:
        load_mcq(tmp_path, "dev")
    assert "\n" not in str(exc.value)


def test_jsonl_loading(tmp_path: Path) -> None:
    lines = [
        {
            "id": 7,
            "question": "q1",
            "A": "a",
            "B": "b",
            "C": "c",
            "D": "d",
            "answer": "d",
            "explanation": None,
        },
        {
            "id": "8",
            "question": "q2",
            "A": "a",
            "B": "b",
            "C": 3,
            "D": "d",
            "answer": "B",
            "explanation": "e",
        },
        {"id": "9", "question": "q3", "A": "a", "B": "b", "C": "c", "answer": "B"},
    ]
    path = tmp_path / "test" / "econ_test.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n", encoding="utf-8")
    items, report = load_mcq(tmp_path, "test")
    assert [(i.id, i.answer, i.options["C"], i.explanation) for i in items] == [
        ("econ/7", "D", "c", ""),
        ("econ/8", "B", "3", "e"),
    ]
    assert report.rejected == {"empty option": 1}


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    good = json.dumps(dict(zip(HEADER, ["1", "q", "a", "b", "c", "d", "A"], strict=True)))
    (tmp_path / "val.jsonl").write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val\.jsonl line 2 is not JSON"):
        load_mcq(tmp_path, "val")
    (tmp_path / "val.jsonl").write_text(json.dumps({"id": "1", "question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks required columns A, B, C, D, answer"):
        load_mcq(tmp_path, "val")


# --------------------------------------------------------------------------------------------- column names

MAPPED = {"id": "", "question": "Question", "answer": "Answer"}  # FinanceIQ's header, mapped in its data config


def test_column_mapping_reads_a_differently_named_header(tmp_path: Path) -> None:
    write_csv(tmp_path / "test" / "银行.csv", [row("0", question="多行\n问题"), row("1", answer="c")],
              header=["", "Question", "A", "B", "C", "D", "Answer"], bom=False)
    items, report = load_mcq(tmp_path, "test", columns=MAPPED)
    assert [(i.id, i.subject, i.question, i.answer) for i in items] == [
        ("银行/0", "银行", "多行\n问题", "A"), ("银行/1", "银行", "q?", "C")]
    assert report.rejected == {}
    jsonl = tmp_path / "val.jsonl"
    jsonl.write_text(json.dumps({"qid": 5, "Question": "q", **dict(zip("ABCD", "abcd", strict=True)), "Answer": "b"}),
                     encoding="utf-8")
    (it,), _ = load_mcq(jsonl, columns={"id": "qid", "question": "Question", "answer": "Answer"})
    assert (it.id, it.question, it.answer) == ("5", "q", "B")


def test_column_mapping_errors_name_data_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", [row("1")])
    with pytest.raises(DataError, match=r"^data\.columns has unknown key 'Question'; its keys are the canonical names"):
        load_mcq(tmp_path, "val", columns={"Question": "question"})
    assert [i.id for i in load_mcq(tmp_path, "val", columns=MAPPED)[0]] == ["1"]  # canonical names still read
    write_csv(tmp_path / "val.csv", [row("1")], header=["num", "Q", "A", "B", "C", "D", "ans"])
    with pytest.raises(DataError, match=r"lacks required columns id \(data\.columns\.id=''\), question \(data\."
                                        r"columns\.question='Question'\), answer .*or fix data\.columns$"):
        load_mcq(tmp_path, "val", columns=MAPPED)
    write_csv(tmp_path / "val.csv", [row("1")])
    with pytest.raises(DataError, match=r"^val\.csv has column 'id' twice once data\.columns is applied"):
        load_mcq(tmp_path, "val", columns={"id": "question"})
    with pytest.raises(DataError, match=r"^data\.columns maps two canonical names to one file column"):
        load_mcq(tmp_path, "val", columns={"id": "x", "question": "x"})
    write_csv(tmp_path / "val.csv", [[*row("1"), "B"]], header=[*HEADER, "answer"])
    with pytest.raises(DataError, match=r"^val\.csv has column 'answer' twice \(header: .*\); fix the file$"):
        load_mcq(tmp_path, "val")


def test_load_items_errors_name_train_split_or_eval_split(tmp_path: Path) -> None:
    """Issue 13: the messages name the config fields that exist, data.train_split and data.eval_split."""
    write_csv(tmp_path / "dev" / "a_dev.csv", [row("1")])
    write_csv(tmp_path / "val" / "a_val.csv", [row("1", "other")])
    cfg = OmegaConf.create({"path": str(tmp_path), "train_split": "val", "eval_split": "tset", "n_train": None,
                            "n_eval": None, "sample_seed": 0})
    with pytest.raises(DataError, match=r"^data\.eval_split='tset' not found .*; available splits: dev, val$"):
        load_items(cfg)
    cfg.train_split, cfg.eval_split = None, "dev"
    with pytest.raises(DataError, match=r"several splits \(dev, val\); set data\.train_split to one of them$"):
        load_items(cfg)
    cfg.train_split = "val"
    assert [[i.id for i in part] for part in load_items(cfg)] == [["a/1"], ["a/1"]]


# --------------------------------------------------------------------------------------------- layouts


def test_flat_subject_split_layout(tmp_path: Path) -> None:
    write_csv(tmp_path / "bank_dev.csv", [row("1")])
    write_csv(tmp_path / "bank_test.csv", [row("1"), row("2")])
    write_csv(tmp_path / "tax_law_test.csv", [row("1")])
    items, report = load_mcq(tmp_path, "test")
    assert [i.id for i in items] == ["bank/1", "bank/2", "tax_law/1"]
    assert report.source == f"{tmp_path.name}/test"
    assert [i.id for i in load_mcq(tmp_path, "test", subjects=["tax_law"])[0]] == ["tax_law/1"]


def test_ids_unique_across_subject_files(tmp_path: Path) -> None:
    write_csv(tmp_path / "val" / "a_val.csv", [row("1"), row("2")])
    write_csv(tmp_path / "val" / "b_val.csv", [row("1")])
    items, _ = load_mcq(tmp_path, "val")
    assert [(i.id, i.subject) for i in items] == [("a/1", "a"), ("a/2", "a"), ("b/1", "b")]


def test_single_file_split_must_match(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "acc_test_selected.csv", [row("1")])
    assert load_mcq(path, "test")[0][0].subject == "acc"
    assert load_mcq(path)[0][0].id == "acc/1"
    with pytest.raises(DataError, match=r"^data\.train_split='val' does not match file 'acc_test_selected\.csv'; "
                       r"set data\.train_split=null"):
        load_mcq(path, "val")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; fix data.path"):
        load_mcq(tmp_path / "nope", "val")


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "README.md").write_text("not data")
    with pytest.raises(DataError, match=r"no \.csv or \.jsonl data files"):
        load_mcq(tmp_path, "val")


def test_unknown_split_lists_available(tmp_path: Path) -> None:
    write_csv(tmp_path / "dev" / "a_dev.csv", [row("1")])
    write_csv(tmp_path / "val" / "a_val.csv", [row("1")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^data\.train_split='test' not found .*; available splits: dev, val$"):
        load_mcq(tmp_path, "test")
    with pytest.raises(DataError, match=r"several splits \(dev, val\); set data\.train_split to one of them$"):
        load_mcq(tmp_path)
    with pytest.raises(DataError, match=r"^data\.eval_split='tset' not found"):
        load_mcq(tmp_path, "tset", split_field="data.eval_split")


def test_ambiguous_split_alias(tmp_path: Path) -> None:
    write_csv(tmp_path / "test_a" / "x.csv", [row("1")])
    write_csv(tmp_path / "test_b" / "x.csv", [row("1")])
    with pytest.raises(DataError, match=r"ambiguous .*test_a, test_b"):
        load_mcq(tmp_path, "test")
    assert load_mcq(tmp_path, "test_b")[1].source.endswith("/test_b")


def test_unknown_subject_lists_available(tmp_path: Path) -> None:
    write_csv(tmp_path / "val" / "law_val.csv", [row("1")])
    write_csv(tmp_path / "val" / "tax_val.csv", [row("1")])
    with pytest.raises(DataError, match=r"unknown 'taxes'; available: law, tax$"):
        load_mcq(tmp_path, "val", subjects=["tax", "taxes"])
    with pytest.raises(DataError, match="data.subjects is empty"):
        load_mcq(tmp_path, "val", subjects=[])


def test_duplicate_question_texts_detected(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", [row("1", "Same  q"), row("2", "other"), row("3", " Same q\n")])
    items, report = load_mcq(tmp_path, "val")
    assert report.n_duplicate_questions == 1
    assert report.lines() == [
        f"note: 1 kept rows of {tmp_path.name}/val repeat an earlier question text; "
        "split_train_eval keeps each text on one side"
    ]
    assert duplicate_questions(items) == {"Same q": ["1", "3"]}


def test_report_lines_constructed_directly() -> None:
    report = LoadReport(n_rows=4, n_kept=1, rejected={"empty question": 3})
    assert report.lines() == ["rejected 3 rows of : empty question"]


# --------------------------------------------------------------------------------------------- hub


def _fake_hub_cache(cache: Path, repo: str) -> Path:
    """The on-disk layout huggingface_hub leaves behind after downloading a dataset snapshot."""
    commit = "0" * 40
    repo_dir = cache / f"datasets--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_offline_without_cache_is_a_clear_error(offline_hub: Path) -> None:
    with pytest.raises(DataError, match=r"'someone/absent' is not reachable and not in the HF cache"):
        resolve_hub_path("someone/absent", cache_dir=offline_hub)
    with pytest.raises(DataError, match=r"hf://<owner>/<name>"):
        load_mcq("hf://justonename")


def test_hub_cached_snapshot_loads_offline(offline_hub: Path) -> None:
    snapshot = _fake_hub_cache(offline_hub, "org/mcq")
    write_csv(snapshot / "data" / "val" / "acc_val.csv", [row("1"), row("2")])
    assert resolve_hub_path("org/mcq") == snapshot
    for uri in ("hf://org/mcq/data", "hf://datasets/org/mcq/data"):
        items, report = load_mcq(uri, "val")
        assert [i.id for i in items] == ["acc/1", "acc/2"]
        assert report.source == "data/val"


# --------------------------------------------------------------------------------------------- sampling

POOL = [item(str(n), f"question {n}") for n in range(50)]


def test_sample_items_deterministic_exact_and_ordered() -> None:
    first = sample_items(POOL, 10, seed=3)
    assert first == sample_items(POOL, 10, seed=3)
    assert first != sample_items(POOL, 10, seed=4)
    assert len(first) == len({i.id for i in first}) == 10
    assert first == sorted(first, key=POOL.index)
    assert sample_items(POOL, None, seed=3) == POOL
    assert sample_items(POOL, 50, seed=3) == POOL


def test_sample_items_too_many_names_the_field() -> None:
    with pytest.raises(
        DataError, match=r"data.n_train=51 but only 50 items are available; lower data.n_train"
    ):
        sample_items(POOL, 51, seed=0, field="data.n_train")
    with pytest.raises(DataError, match=r"n=-1 must be >= 0"):
        sample_items(POOL, -1, seed=0)


def _texts(items: list[McqItem]) -> set[str]:
    return {normalize_text(i.question) for i in items}


def test_subject_quotas_largest_remainder() -> None:
    assert subject_quotas({"a": 50, "b": 30, "c": 20}, 10) == {"a": 5, "b": 3, "c": 2}
    assert subject_quotas({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}  # ties by name
    assert subject_quotas({"a": 7, "b": 2}, 4) == {"a": 3, "b": 1}  # 3.11 and 0.89
    for n in range(0, 31):
        quota = subject_quotas({"x": 17, "y": 9, "z": 4}, n)
        assert sum(quota.values()) == n and all(q <= c for q, c in zip(quota.values(), (17, 9, 4), strict=True))


STRATA = [McqItem(f"{s}/{n}", f"{s} q{n}", dict(zip(OPTION_LETTERS, "abcd", strict=True)), "A", "", s)
          for s, size in (("big", 60), ("mid", 30), ("small", 10)) for n in range(size)]


def test_stratified_split_gives_each_subject_its_share() -> None:
    for seed in range(10):
        train, eval_ = split_train_eval(STRATA, n_train=40, n_eval=20, seed=seed, stratify=True)
        assert Counter(i.subject for i in eval_) == {"big": 12, "mid": 6, "small": 2}
        assert Counter(i.subject for i in train) == {"big": 24, "mid": 12, "small": 4}  # of 48/24/8 left
        assert not _texts(train) & _texts(eval_)
    unstratified = [Counter(i.subject for i in split_train_eval(STRATA, None, 20, seed)[1]) for seed in range(10)]
    assert any(c != {"big": 12, "mid": 6, "small": 2} for c in unstratified)  # what stratifying is for
    sampled = sample_items(STRATA, 10, seed=0, stratify=True)
    assert Counter(i.subject for i in sampled) == {"big": 6, "mid": 3, "small": 1}


def test_split_no_overlap_with_duplicate_texts() -> None:
    # 20 texts, each appearing 1-4 times with whitespace variants: 50 items in all.
    pool = []
    for n in range(20):
        for copy in range(1 + n % 4):
            pool.append(item(f"{n}.{copy}", f"text  {n}" + " " * copy + "\n" * (copy % 2)))
    assert len(pool) == 50
    for seed in range(30):
        train, eval_ = split_train_eval(pool, n_train=20, n_eval=15, seed=seed)
        assert (len(train), len(eval_)) == (20, 15)
        assert not _texts(train) & _texts(eval_)
        assert not {i.id for i in train} & {i.id for i in eval_}


def test_split_deterministic_and_seed_dependent() -> None:
    a = split_train_eval(POOL, n_train=30, n_eval=10, seed=7)
    assert a == split_train_eval(POOL, n_train=30, n_eval=10, seed=7)
    assert a != split_train_eval(POOL, n_train=30, n_eval=10, seed=8)


def test_split_sizes_and_limits() -> None:
    train, eval_ = split_train_eval(POOL, n_train=None, n_eval=12, seed=0)
    assert (len(train), len(eval_)) == (38, 12)
    assert {i.id for i in train} | {i.id for i in eval_} == {i.id for i in POOL}
    train, eval_ = split_train_eval(POOL, n_train=5, n_eval=0, seed=0)
    assert (len(train), eval_) == (5, [])
    with pytest.raises(DataError, match=r"data.n_eval=51 but only 50"):
        split_train_eval(POOL, n_train=None, n_eval=51, seed=0)
    with pytest.raises(DataError, match=r"data.n_train=41 but only 40 items are left after data.n_eval=10"):
        split_train_eval(POOL, n_train=41, n_eval=10, seed=0)


@needs_fineval
def test_split_fineval_val_without_overlap() -> None:
    items, _ = load_mcq(FINEVAL, "val")
    train, eval_ = split_train_eval(items, n_train=3000, n_eval=300, seed=0)
    assert (len(train), len(eval_)) == (3000, 300)
    assert not _texts(train) & _texts(eval_)


def test_drop_overlap_removes_shared_texts() -> None:
    eval_ = [item("e1", "question  3"), item("e2", "new")]
    kept, n_dropped = drop_overlap(POOL[:5], eval_)
    assert ([i.id for i in kept], n_dropped) == (["0", "1", "2", "4"], 1)


@needs_fineval
def test_fineval_test_questions_all_appear_in_val() -> None:
    """A fact about the data that makes drop_overlap necessary: test_20pct is a subset of val."""
    val, _ = load_mcq(FINEVAL, "val")
    test, _ = load_mcq(FINEVAL, "test")
    kept, n_dropped = drop_overlap(val, test)
    # the 918 test rows themselves plus 2 val rows that repeat the text of one of them
    assert (len(test), n_dropped, len(kept)) == (918, 920, 3340 - 920)
    assert {i.id: i for i in test}.items() <= {i.id: i for i in val}.items()
