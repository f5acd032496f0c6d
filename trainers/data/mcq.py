"""The one place that defines the multiple-choice data format (FinanceIQ, FinEval, ceval-exam).

Every dataset this tool reads (docs/data.md) is four-option multiple choice with columns
``id,question,A,B,C,D,answer[,explanation]``. This module turns the layouts those datasets ship in
into validated ``McqItem`` lists, reports every rejected row by reason, and makes the seeded
down-sampling and the overlap-free train/eval split. Errors a user can cause are raised here, once,
as one-line ``DataError`` messages; downstream code may assume valid items.

Supported ``path`` forms (``load_mcq``):

* a single ``.csv`` / ``.jsonl`` file; its subject is the file stem with the split suffix stripped;
* ``<dir>/<split>/*.csv|*.jsonl``, one file per subject (FinEval, ceval-exam);
* ``<dir>/<split>.csv|.jsonl`` (no subjects);
* ``<dir>/<subject>_<split>.csv|.jsonl`` (files named by subject and split, FinanceIQ-style);
* ``hf://[datasets/]<owner>/<name>[/<subdir>]``: a Hugging Face hub dataset snapshot, resolved by
  ``resolve_hub_path`` (from the local HF cache when offline), then read as one of the layouts above.

Column names: a dataset that names its columns differently says so in its data config
(``data.columns``, canonical name -> the file's name), so the files load as published. FinanceIQ's
header is ``,Question,A,B,C,D,Answer``: ``columns: {id: "", question: Question, answer: Answer}``.

Split names: a requested split matches a split directory or file-name tag of the same name, or,
when there is none, the single one that extends it with ``_<suffix>``. So ``split="test"`` reads
FinEval's ``test_20pct/`` directory and ``accounting_test_selected.csv`` files; a name that matches
several (``test_a``, ``test_b``) is an error listing them.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "question", *OPTION_LETTERS, "answer")
KNOWN_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "explanation")
DATA_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")
HUB_PREFIX = "hf://"
_EXTRA_FIELDS = "\0extra"  # marks a CSV row with more fields than its header, so it can be rejected

# Split tags as these datasets write them at the end of a file stem: "_dev", "_val", "_test",
# "_test_selected" (FinEval), "_train", "_validation"; one extra "_<suffix>" token is allowed.
_KNOWN_SPLIT_TAG = re.compile(
    r"^(?:(?P<subject>.+)_)?(?P<tag>(?:dev|val|valid|validation|train|test)(?:_[a-z0-9]+)?)$"
)


class DataError(ValueError):
    """One-line, user-facing: names the file/field and the fix."""


@dataclass(frozen=True)
class McqItem:
    """One validated question. ``id`` is unique within a loaded set (see ``load_mcq``)."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    explanation: str
    subject: str


@dataclass
class LoadReport:
    """What a load read, kept and rejected, so no row disappears silently."""

    n_rows: int
    n_kept: int
    rejected: dict[str, int]
    source: str = ""
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending row
    n_duplicate_questions: int = 0  # kept rows whose question text repeats an earlier kept row

    def lines(self) -> list[str]:
        """One line per rejection reason, plus a note when question texts repeat (kept, not rejected)."""
        out = []
        for reason, count in self.rejected.items():
            example = f" (e.g. {self.examples[reason]})" if reason in self.examples else ""
            out.append(f"rejected {count} rows of {self.source}: {reason}{example}")
        if self.n_duplicate_questions:
            out.append(
                f"note: {self.n_duplicate_questions} kept rows of {self.source} repeat an earlier question "
                "text; split_train_eval keeps each text on one side"
            )
        return out

    def _reject(self, reason: str, example: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.examples.setdefault(reason, example)


@dataclass(frozen=True)
class _DataFile:
    path: Path
    subject: str
    label: str  # path relative to the dataset root, as shown in messages


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_mcq(
    path: str | Path,
    split: str | None = None,
    subjects: Sequence[str] | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    split_field: str = "data.train_split",
) -> tuple[list[McqItem], LoadReport]:
    """Load and validate one split of a multiple-choice dataset.

    ``columns`` maps canonical column names to the names the files use (``data.columns``); columns
    it does not name, and files that already use the canonical name, are read under the canonical
    name (a name that would then occur twice is an error). ``split_field`` is the config field that
    chose ``split``, so that an error about the split names the field the user has to change.

    Rows with an empty id or question, an empty option, an answer outside A-D, more fields than the
    header, or an id already seen are rejected and counted by reason (the first row with an id is
    kept: one bad row should not stop a sweep, and the report names it). Ids are ``<subject>/<id>``
    whenever the subject is known, so they are unique across subject files and stay the same
    whichever subjects or layout a run loads (per-question results are paired across runs by id).
    """
    rename = _column_renames(columns)
    files, source = _resolve_files(path, split, split_field)
    files = _filter_subjects(files, subjects)
    report = LoadReport(n_rows=0, n_kept=0, rejected={}, source=source)
    items: list[McqItem] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for data_file in files:
        for row_no, row in enumerate(_read_rows(data_file, rename), start=1):
            report.n_rows += 1
            item, reason = _to_item(row, data_file.subject)
            if item is not None and item.id in seen_ids:
                reason = "duplicate id (first row kept)"
            if reason is not None:
                report._reject(reason, _row_label(row, row_no, data_file))
                continue
            assert item is not None
            seen_ids.add(item.id)
            text = normalize_text(item.question)
            report.n_duplicate_questions += int(text in seen_texts)
            seen_texts.add(text)
            items.append(item)
    report.n_kept = len(items)
    _check_something_kept(report, split_field)
    return items, report


def split_files(path: str | Path, split: str | None = None, subjects: Sequence[str] | None = None,
                *, split_field: str = "data.train_split") -> list[tuple[str, Path]]:
    """The data files `load_mcq` reads for one split, as (label relative to the dataset root, path): what a
    run's data fingerprint hashes, so that it names the questions' content wherever the files lie."""
    files, _ = _resolve_files(path, split, split_field)
    return [(f.label, f.path) for f in _filter_subjects(files, subjects)]


def read_subject_info(path: str | Path, file: str | None) -> dict[str, dict[str, str]] | None:
    """Each subject's display name and category, from a mapping file shipped with the data set
    (ceval-exam's ``mapping.json``: subject -> {"name": ..., "category": ...}), or None without one.

    ``file`` is ``data.subject_info``, relative to the data set's directory. The categories are what
    the report groups subjects by (C-Eval: STEM, Social Sciences, Humanities, Other).
    """
    if not file:
        return None
    mapping = _local_path(path) / file
    try:
        raw = json.loads(mapping.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data.subject_info={file}: no such file in {_local_path(path)}; "
                        "set it to the data set's subject mapping or null") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"data.subject_info={file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise DataError(f"data.subject_info={file}: expected {{subject: {{name, category}}}}")
    return {str(k): {"name": str(v.get("name", k)), "category": str(v.get("category", ""))} for k, v in raw.items()}


def sample_items(
    items: Sequence[McqItem], n: int | None, seed: int, *, field: str = "n", stratify: bool = False
) -> list[McqItem]:
    """Deterministic down-sampling: ``n`` items chosen with ``seed``, returned in their original order.

    ``n=None`` returns all items. Asking for more items than exist is a DataError naming ``field``
    (e.g. ``data.n_train``): a silently smaller set would change the experiment (steps, accuracy
    granularity) without anyone noticing. ``stratify`` keeps each subject's share (largest
    remainder), so a small sample of a dataset with small subjects still has all of them.
    """
    if n is None:
        return list(items)
    _check_count(n, len(items), field)
    rng = random.Random(seed)
    if not stratify:
        return [items[i] for i in sorted(rng.sample(range(len(items)), n))]
    by_subject: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_subject.setdefault(it.subject, []).append(i)
    quota = subject_quotas({s: len(ix) for s, ix in by_subject.items()}, n)
    keep = sorted(i for s in sorted(by_subject) for i in rng.sample(by_subject[s], quota[s]))
    return [items[i] for i in keep]


def subject_quotas(counts: Mapping[str, int], n: int) -> dict[str, int]:
    """``n`` shared among subjects in proportion to ``counts`` (largest remainder; ties by name)."""
    total = sum(counts.values())
    if total == 0:
        return dict.fromkeys(counts, 0)
    quota = {s: n * c // total for s, c in counts.items()}
    by_remainder = sorted(counts, key=lambda s: (-(n * counts[s] % total), s))
    for s in by_remainder[: n - sum(quota.values())]:
        quota[s] += 1
    return quota


def split_train_eval(
    items: Sequence[McqItem], n_train: int | None, n_eval: int, seed: int, *, stratify: bool = False
) -> tuple[list[McqItem], list[McqItem]]:
    """Seeded split of one pool into train and eval with no question text on both sides.

    Items are grouped by whitespace-normalised question text; groups are shuffled with ``seed`` and
    eval takes whole groups until it holds ``n_eval`` items (the surplus of the last group is left
    out, never given to train). Train is then ``n_train`` items (None = all) sampled from the other
    groups. Sizes are exact; asking for more than the pool holds is a DataError naming
    ``data.n_eval`` or ``data.n_train``. Both lists keep the pool's order.

    ``stratify`` gives each subject its share of eval (and of a sampled train): a group counts
    towards the subject of its first item, so the shares are exact unless a text repeats across subjects.
    """
    _check_count(n_eval, len(items), "data.n_eval")
    groups = list(_group_by_text(items).values())
    random.Random(seed).shuffle(groups)

    def key(group: list[int]) -> str:
        return items[group[0]].subject if stratify else ""

    sizes: dict[str, int] = {}
    for group in groups:
        sizes[key(group)] = sizes.get(key(group), 0) + len(group)
    room = subject_quotas(sizes, n_eval)
    eval_idx: list[int] = []
    rest_idx: list[int] = []
    for group in groups:
        if room[key(group)] > 0:
            taken = group[: room[key(group)]]
            eval_idx.extend(taken)
            room[key(group)] -= len(taken)
        else:
            rest_idx.extend(group)
    rest = [items[i] for i in sorted(rest_idx)]
    if n_train is not None and n_train > len(rest):
        raise DataError(
            f"data.n_train={n_train} but only {len(rest)} items are left after data.n_eval={n_eval} "
            "(questions sharing a text stay on one side); lower data.n_train or data.n_eval"
        )
    train = sample_items(rest, n_train, seed + 1, field="data.n_train", stratify=stratify)
    return train, [items[i] for i in sorted(eval_idx)]


def drop_overlap(train: Sequence[McqItem], eval_items: Sequence[McqItem]) -> tuple[list[McqItem], int]:
    """Train items whose question text also appears in eval removed, and how many were removed.

    Needed when train and eval come from two splits that share questions: FinEval's test_20pct is
    a subset of its val split, so training on val and evaluating on test would score memorised items.
    """
    eval_texts = {normalize_text(item.question) for item in eval_items}
    kept = [item for item in train if normalize_text(item.question) not in eval_texts]
    return kept, len(train) - len(kept)


def resolve_hub_path(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """Local directory of a Hugging Face hub dataset snapshot.

    Downloads when the hub is reachable; offline (no network, or ``HF_HUB_OFFLINE=1``) it returns
    the snapshot already in the HF cache, and otherwise raises a DataError saying how to get the data.
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        local = huggingface_hub.snapshot_download(repo_id=repo_id, repo_type="dataset", cache_dir=cache_dir)
    except LocalEntryNotFoundError:
        raise DataError(
            f"hub dataset {repo_id!r} is not reachable and not in the HF cache; download it on a machine "
            "with network (huggingface-cli download --repo-type dataset ...) and point data.path at the files"
        ) from None
    except (HfHubHTTPError, HFValidationError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"hub dataset {repo_id!r} could not be fetched ({first_line}); check data.path"
        ) from None
    return Path(local)


def normalize_text(text: str) -> str:
    """Question text with whitespace collapsed: what counts as 'the same question'."""
    return " ".join(text.split())


def duplicate_questions(items: Sequence[McqItem]) -> dict[str, list[str]]:
    """Normalised question text -> ids, for texts that occur more than once."""
    by_text: dict[str, list[str]] = {}
    for item in items:
        by_text.setdefault(normalize_text(item.question), []).append(item.id)
    return {text: ids for text, ids in by_text.items() if len(ids) > 1}


# ---------------------------------------------------------------------------------------------
# Finding the files of a split
# ---------------------------------------------------------------------------------------------


def _resolve_files(path: str | Path, split: str | None, split_field: str) -> tuple[list[_DataFile], str]:
    """(data files of the split, source label for the report)."""
    root = _local_path(path)
    if not root.exists():
        raise DataError(f"data.path {str(path)!r} does not exist; fix data.path")
    if root.is_file():
        return [_single_file(root, split, split_field)], root.name
    split_dirs = _split_dirs(root)
    if split_dirs:
        name = _pick_split(split, sorted(split_dirs), root, split_field)
        files = [_DataFile(p, _subject_of(p.stem, name), f"{name}/{p.name}") for p in split_dirs[name]]
        return files, f"{root.name}/{name}"
    tagged = _tagged_files(root)
    if not tagged:
        raise DataError(
            f"no .csv or .jsonl data files in {str(root)!r} or its split subdirectories; fix data.path"
        )
    name = _pick_split(split, sorted(tagged), root, split_field)
    return tagged[name], f"{root.name}/{name}"


def _local_path(path: str | Path) -> Path:
    """A local path, or the local snapshot behind ``hf://[datasets/]<owner>/<name>[/<subdir>]``."""
    text = str(path)
    if not text.startswith(HUB_PREFIX):
        return Path(path).expanduser()
    parts = [p for p in text[len(HUB_PREFIX) :].split("/") if p]
    if parts and parts[0] == "datasets":
        parts = parts[1:]
    if len(parts) < 2:
        raise DataError(f"data.path {text!r} must look like hf://<owner>/<name>[/<subdir>]")
    return resolve_hub_path("/".join(parts[:2])).joinpath(*parts[2:])


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)


def _split_dirs(root: Path) -> dict[str, list[Path]]:
    """Subdirectories that hold data files: the ``<dir>/<split>/<subject>.csv`` layout."""
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    found = {d.name: _data_files(d) for d in dirs}
    return {name: files for name, files in found.items() if files}


def _tagged_files(root: Path) -> dict[str, list[_DataFile]]:
    """Flat files grouped by split tag: ``<split>.csv`` (no subject) or ``<subject>_<split>.csv``."""
    tagged: dict[str, list[_DataFile]] = {}
    for p in _data_files(root):
        match = _KNOWN_SPLIT_TAG.match(p.stem)
        subject, tag = (match["subject"] or "", match["tag"]) if match else ("", p.stem)
        tagged.setdefault(tag, []).append(_DataFile(p, subject, p.name))
    return tagged


def _pick_split(split: str | None, available: list[str], root: Path, split_field: str) -> str:
    """The available split that ``split`` names: exact, else the single one extending it with ``_...``."""
    listing = ", ".join(available)
    if split is None:
        if len(available) == 1:
            return available[0]
        raise DataError(f"{str(root)!r} holds several splits ({listing}); set {split_field} to one of them")
    if split in available:
        return split
    extended = [name for name in available if name.startswith(split + "_")]
    if len(extended) == 1:
        return extended[0]
    if extended:
        raise DataError(
            f"{split_field}={split!r} is ambiguous in {str(root)!r} ({', '.join(extended)}); name one"
        )
    raise DataError(f"{split_field}={split!r} not found in {str(root)!r}; available splits: {listing}")


def _single_file(path: Path, split: str | None, split_field: str) -> _DataFile:
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"{str(path)!r} is not a .csv or .jsonl file; fix data.path")
    match = _KNOWN_SPLIT_TAG.match(path.stem)
    tag = match["tag"] if match else ""
    if split is not None and not (tag == split or tag.startswith(split + "_")):
        raise DataError(
            f"{split_field}={split!r} does not match file {path.name!r}; set {split_field}=null or point "
            "data.path at the dataset directory"
        )
    subject = (match["subject"] or "") if match else path.stem
    return _DataFile(path, subject, path.name)


def _subject_of(stem: str, split_name: str) -> str:
    """File stem without its split suffix: ``accounting_test_selected`` -> ``accounting``."""
    if stem.endswith("_" + split_name):
        return stem[: -len(split_name) - 1]
    match = _KNOWN_SPLIT_TAG.match(stem)
    return (match["subject"] or "") if match else stem


def _filter_subjects(files: list[_DataFile], subjects: Sequence[str] | None) -> list[_DataFile]:
    if subjects is None:
        return files
    if not subjects:
        raise DataError("data.subjects is empty; omit it to load every subject")
    available = sorted({f.subject for f in files if f.subject})
    unknown = [s for s in subjects if s not in available]
    if unknown:
        listing = ", ".join(available) if available else "none (this data has no per-subject files)"
        raise DataError(f"data.subjects has unknown {', '.join(map(repr, unknown))}; available: {listing}")
    wanted = set(subjects)
    return [f for f in files if f.subject in wanted]


# ---------------------------------------------------------------------------------------------
# Reading and validating rows
# ---------------------------------------------------------------------------------------------


def _column_renames(columns: Mapping[str, str] | None) -> dict[str, str]:
    """``data.columns`` (canonical -> file name) checked and inverted to file name -> canonical."""
    if not columns:
        return {}
    unknown = [str(k) for k in columns if k not in KNOWN_COLUMNS]
    if unknown:
        raise DataError(
            f"data.columns has unknown key {', '.join(map(repr, unknown))}; its keys are the canonical "
            f"names {', '.join(KNOWN_COLUMNS)}, its values the files' column names"
        )
    rename = {str(file_name).strip(): canonical for canonical, file_name in columns.items()}
    if len(rename) != len(columns):
        raise DataError(f"data.columns maps two canonical names to one file column ({dict(columns)}); fix data.columns")
    return rename


def _renamed(header: list[str], rename: dict[str, str], data_file: _DataFile) -> list[str]:
    """The header under canonical names; a canonical name that then occurs twice is an error, not a silent pick."""
    names = [rename.get(name, name) for name in header]
    twice = sorted({name for name in names if name in KNOWN_COLUMNS and names.count(name) > 1})
    if twice:
        where = " once data.columns is applied" if rename else ""
        raise DataError(
            f"{data_file.label} has column {', '.join(map(repr, twice))} twice{where} "
            f"(header: {','.join(header)}); fix {'data.columns' if rename else 'the file'}"
        )
    return names


def _read_rows(data_file: _DataFile, rename: dict[str, str]) -> Iterator[dict[str, str]]:
    """Rows as column -> value strings (missing values read as "", never NaN; ids stay as written)."""
    try:
        if data_file.path.suffix.lower() == ".csv":
            yield from _read_csv(data_file, rename)
        else:
            yield from _read_jsonl(data_file, rename)
    except UnicodeDecodeError:
        raise DataError(f"{data_file.label} is not UTF-8 text; re-save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{data_file.label} is not valid CSV ({exc}); fix its quoting") from None


def _read_csv(data_file: _DataFile, rename: dict[str, str]) -> Iterator[dict[str, str]]:
    # utf-8-sig drops FinEval's BOM; newline="" keeps line breaks inside quoted fields intact.
    with data_file.path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = _renamed([name.strip() for name in next(reader, [])], rename, data_file)
        _check_columns(header, data_file, rename)
        for values in reader:
            if not values:
                continue
            row = dict(zip(header, values, strict=False))
            if len(values) > len(header):
                row[_EXTRA_FIELDS] = ""
            yield row


def _read_jsonl(data_file: _DataFile, rename: dict[str, str]) -> Iterator[dict[str, str]]:
    with data_file.path.open(encoding="utf-8-sig") as fh:
        first = True
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{data_file.label} line {line_no} is not JSON ({exc.msg}); fix that line"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"{data_file.label} line {line_no} is not a JSON object; write one object per line"
                )
            keys = _renamed([str(k) for k in obj], rename, data_file)
            if first:
                _check_columns(keys, data_file, rename)
                first = False
            yield {k: "" if v is None else str(v) for k, v in zip(keys, obj.values(), strict=True)}


def _check_columns(columns: list[str], data_file: _DataFile, rename: dict[str, str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        mapped = {canonical: file_name for file_name, canonical in rename.items()}
        named = [f"{c} (data.columns.{c}={mapped[c]!r})" if c in mapped else c for c in missing]
        fix = "or set data.columns to map them" if not rename else "or fix data.columns"
        raise DataError(
            f"{data_file.label} lacks required columns {', '.join(named)} "
            f"(has: {', '.join(map(repr, columns)) or 'none'}); "
            f"every file needs {','.join(REQUIRED_COLUMNS)} {fix}"
        )


def _to_item(row: dict[str, str], subject: str) -> tuple[McqItem | None, str | None]:
    """(item, None) for a valid row, (None, reason) otherwise; the first failing check names the reason."""
    if _EXTRA_FIELDS in row:
        return None, "more fields than the header"
    raw_id = row.get("id", "").strip()
    question = row.get("question", "")
    options = {letter: row.get(letter, "") for letter in OPTION_LETTERS}
    answer = row.get("answer", "").strip().upper()
    if not raw_id:
        return None, "empty id"
    if not question.strip():
        return None, "empty question"
    if any(not text.strip() for text in options.values()):
        return None, "empty option"
    if answer not in OPTION_LETTERS:
        return None, "answer not in A-D"
    item_id = f"{subject}/{raw_id}" if subject else raw_id
    explanation = row.get("explanation", "") or ""
    return McqItem(item_id, question, options, answer, explanation, subject), None


def _row_label(row: dict[str, str], row_no: int, data_file: _DataFile) -> str:
    raw_id = (row.get("id") or "").strip()
    where = f"row id {raw_id}" if raw_id else f"data row {row_no}"
    return f"{where} in {data_file.label}"


def _check_something_kept(report: LoadReport, split_field: str) -> None:
    if report.n_rows == 0:
        raise DataError(f"{report.source} has no data rows; check data.path and {split_field}")
    if report.n_kept == 0:
        first = report.lines()[0]
        raise DataError(f"every row of {report.source} was rejected ({first}); fix the files")


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


def _check_count(n: int, available: int, field_name: str) -> None:
    if n < 0:
        raise DataError(f"{field_name}={n} must be >= 0")
    if n > available:
        raise DataError(f"{field_name}={n} but only {available} items are available; lower {field_name}")


def _group_by_text(items: Sequence[McqItem]) -> dict[str, list[int]]:
    """Item indices grouped by normalised question text, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(normalize_text(item.question), []).append(i)
    return groups
