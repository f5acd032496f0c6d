"""Find and load run directories (docs/architecture.md) into pandas DataFrames.

A sweep directory holds run directories at any depth. A run is finished when its `result.json` exists
(written last, atomically, by the trainer); a directory with `.hydra/config.yaml` and no result.json is
an unfinished run and makes the sweep incomplete. Corrupt or truncated files are reported by path and
skipped — one bad file must never take the report down with it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import method_name
from analysis.inputs import count_once, inputs_key, key_settings
from trainers.runtime.run_dir import EVAL, METRICS, OK, PREDICTIONS, RESULT, STOP_STATUSES, RunStatus, run_status

SPLITS = ("select", "report")
"""predictions.jsonl's `split`: best lr and β are chosen on "select" questions, scored on "report"."""
SKIP_DIRS = {".hydra", "wandb", "report", "__pycache__", ".git", ".submitit"}
"""Directories never searched for runs: Hydra's own files, W&B's, and the report this package writes.
Names starting with "_" are skipped too: the sweeper keeps its own jobs there (`_prepare/`)."""

RUN_COLUMNS = [
    "run",
    "setting",
    "method",
    "method_name",
    "lr",
    "beta",
    "seed",
    "dataset",
    "world_seed",
    "world_sha256",
    "model",
    "group",
    "status",
    "error",
    "accuracy",
    "m_theta",
    "train_m_theta",
    "base_accuracy",
    "eval_n",
    "train_n",
    "steps",
    "train_tokens",
    "wall_s",
    "tokens_per_s",
    "last_select_accuracy",
    "finished_at",
    "finished_at_from",
    "inputs",
    "source",
    "path",
]
"""`last_select_accuracy`: a stopped or pruned run's last intermediate selection accuracy (result.json's
`last_eval`, at step `steps`), NaN for any other run. `finished_at` is a UTC timestamp: result.json's own,
else (older runs) the file's mtime, which
`finished_at_from` says ("result.json" or "mtime") — the order of search trials rests on it. `inputs`: the run's
content fingerprints (analysis.inputs.inputs_key; "" when result.json has none: an older run, or a job that failed
before it read its inputs); `source`: the sweep directory it was read from, as given."""
NUMERIC_FIELDS = (
    "accuracy",
    "m_theta",
    "train_m_theta",
    "base_accuracy",
    "eval_n",
    "train_n",
    "steps",
    "train_tokens",
    "wall_s",
    "tokens_per_s",
)


@dataclass
class Sweep:
    """Everything the analysis needs from one sweep directory, already validated."""

    root: Path
    runs: pd.DataFrame
    """One row per finished run (valid result.json), columns RUN_COLUMNS; `run` is relative to root."""
    metrics: pd.DataFrame
    """metrics.jsonl of every finished run, long format, with a `run` column."""
    evals: pd.DataFrame
    """eval.jsonl of every finished run, long format, with a `run` column."""
    incomplete: list[str] = field(default_factory=list)
    """Run directories (relative) without result.json: unfinished or killed jobs."""
    set_aside: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*RUN_COLUMNS, "why"]))
    """Finished runs not counted (`count_once`): `why` is "repeat" (another copy of the same run is counted) or
    "conflict" (copies of one point and seed disagree: none is counted)."""
    notes: list[str] = field(default_factory=list)
    """What the report must say about how runs became settings: settings split by their inputs, runs counted once,
    conflicts excluded."""
    problems: list[str] = field(default_factory=list)
    """One line per corrupt or invalid file, 'path: what is wrong'; those files were skipped."""
    subject_info: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """Per run, result.json's subject_info (subject -> name, category), where the data set ships one."""
    data_warnings: dict[str, list[str]] = field(default_factory=dict)
    """Per run with any, result.json's data_warnings: what the data loader rejected or dropped, and why."""
    _predictions: dict[str, pd.Series] = field(default_factory=dict, repr=False)
    _splits: dict[str, pd.Series | None] = field(default_factory=dict, repr=False)
    _subjects: dict[str, pd.Series | None] = field(default_factory=dict, repr=False)

    @property
    def is_complete(self) -> bool:
        return not self.incomplete

    def predictions(self, run: str) -> pd.Series | None:
        """Per-question correctness (float 0/1, indexed by question id) of a run's final eval, or None.

        Loaded lazily: only the best configurations need them, and real sweeps have thousands of lines
        per run.
        """
        if run not in self._predictions:
            path = self.root / run / PREDICTIONS
            if not path.exists():
                return None
            records, problems = read_jsonl(path)
            self.problems.extend(problems)
            ids, correct, splits, subjects = [], [], [], []
            for i, rec in enumerate(records):
                if "id" not in rec or not isinstance(rec.get("correct"), (bool, int, float)):
                    self.problems.append(f"{path}: record {i + 1} lacks 'id' or a boolean 'correct'; skipped")
                    continue
                ids.append(str(rec["id"]))
                correct.append(float(bool(rec["correct"])))
                splits.append(rec.get("split"))
                subjects.append(rec.get("subject"))
            s = pd.Series(correct, index=pd.Index(ids, name="id"), name=run, dtype=float)
            sp = pd.Series(splits, index=s.index, name=run, dtype=object)
            sj = pd.Series(subjects, index=s.index, name=run, dtype=object)
            if s.index.has_duplicates:
                self.problems.append(f"{path}: duplicate question ids; the first of each is used")
                keep = ~s.index.duplicated()
                s, sp, sj = s[keep], sp[keep], sj[keep]
            self._predictions[run] = s
            self._subjects[run] = sj if len(sj) and sj.notna().all() else None
            has_split = sp.isin(SPLITS)
            if has_split.any() and not has_split.all():
                self.problems.append(f"{path}: 'split' missing or not one of {SPLITS} on some records; "
                                     "the run's split is ignored")
            self._splits[run] = sp if has_split.all() and len(sp) else None
        return self._predictions[run]

    def subjects(self, run: str) -> pd.Series | None:
        """The subject of each question of a run's final eval, or None when the data set has no subjects."""
        if self.predictions(run) is None:
            return None
        return self._subjects.get(run)

    def split(self, run: str) -> pd.Series | None:
        """The split ("select" or "report") of each question of a run's final eval, or None when
        predictions.jsonl does not record it (runs from before the split existed)."""
        if self.predictions(run) is None:
            return None
        return self._splits.get(run)


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """Return (finished, unfinished) run directories under root, sorted.

    Finished: has result.json. Unfinished: has .hydra/config.yaml but no result.json and no run below
    it (a Hydra app run with hydra.run.dir=SWEEP_DIR leaves a .hydra at the sweep root, which is not a
    run).
    """
    finished: list[Path] = []
    hydra_only: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("_"))
        here = Path(dirpath)
        if RESULT in filenames:
            finished.append(here)
        elif (here / ".hydra" / "config.yaml").is_file():
            hydra_only.append(here)
    runs = finished + hydra_only
    unfinished = [d for d in hydra_only if not any(r != d and d in r.parents for r in runs)]
    return sorted(finished), sorted(unfinished)


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Read a JSON-lines file, skipping (and reporting) lines that do not parse — e.g. a truncated tail."""
    records: list[dict] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return [], [f"{path}: cannot read ({e.strerror or e})"]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{lineno}: not valid JSON ({e.msg}); line skipped")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}:{lineno}: not a JSON object; line skipped")
            continue
        records.append(rec)
    return records, problems


def _number(value: object) -> float:
    """float(value) for JSON numbers (and numeric strings), NaN for null/absent; raises on anything else."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def parse_result(path: Path) -> dict:
    """Validate one result.json and return its row; raises ValueError with a one-line reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at line {e.lineno}); truncated or corrupt") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("method", "lr", "status") if k not in data]
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    if not isinstance(data["method"], str) or not data["method"]:
        raise ValueError(f"'method' must be a non-empty string, got {data['method']!r}")
    status = data["status"]
    if run_status(data) is None:
        raise ValueError(f"'status' must be one of {', '.join(RunStatus)}, got {status!r}")
    row: dict = {"method": data["method"], "status": status}
    try:
        row["lr"] = _number(data["lr"])
        row["beta"] = _number(data.get("beta"))
        for k in NUMERIC_FIELDS:
            row[k] = _number(data.get(k))
    except (TypeError, ValueError) as e:
        raise ValueError(f"a numeric field is not a number ({e})") from None
    if not (math.isfinite(row["lr"]) and row["lr"] > 0):
        raise ValueError(f"'lr' must be a positive number, got {data['lr']!r}")
    if status == OK:
        acc = row["accuracy"]
        if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise ValueError(
                f"status ok but 'accuracy' is {data.get('accuracy')!r} (need a number in [0, 1])"
            )
    else:
        row["accuracy"] = math.nan  # the contract: accuracy is null unless ok
    last = data.get("last_eval") if status in STOP_STATUSES else None
    try:
        row["last_select_accuracy"] = _number(last.get("select_accuracy")) if isinstance(last, dict) else math.nan
    except (TypeError, ValueError):
        row["last_select_accuracy"] = math.nan  # evidence only: an unreadable one drops the evidence, not the run
    seed = data.get("seed", 0)
    row["seed"] = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else 0
    for k in ("dataset", "model", "group"):
        v = data.get(k)
        row[k] = str(v) if v not in (None, "") else "unknown"
    world = data.get("world_seed")  # the embedded world's seed (null for other data, absent in older runs)
    row["world_seed"] = int(world) if isinstance(world, (int, float)) and not isinstance(world, bool) else math.nan
    row["inputs"] = inputs_key(data)
    row["world_sha256"] = data["world_sha256"] if isinstance(data.get("world_sha256"), str) else None
    row["error"] = data.get("error")
    row["subject_info"] = data.get("subject_info")
    warnings = data.get("data_warnings")
    row["data_warnings"] = [str(w) for w in warnings] if isinstance(warnings, list) else []
    row["finished_at"] = _timestamp(data.get("finished_at"))
    return row


def _timestamp(value: object) -> pd.Timestamp | None:
    """An ISO 8601 `finished_at` as a UTC timestamp (naive means UTC); None when absent or unreadable,
    so the caller falls back to the file's mtime rather than dropping a finished run over a clock."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))  # 'Z': Python < 3.11
    except ValueError:
        return None
    return pd.Timestamp(t if t.tzinfo else t.replace(tzinfo=timezone.utc)).tz_convert("UTC")


def load_sweep(root: Path | str) -> Sweep:
    """Load every run directory under root; invalid files are listed in Sweep.problems and skipped. Settings
    are named and runs counted once as in `load_sweeps`."""
    return _finish(_read_sweep(Path(root)))


def _read_sweep(root: Path) -> Sweep:
    """Every run under root as parsed, settings named by `_settings` alone (`_finish` keys them on inputs)."""
    finished, unfinished = find_run_dirs(root)
    rows: list[dict] = []
    problems: list[str] = []
    subject_info: dict[str, dict[str, dict[str, str]]] = {}
    data_warnings: dict[str, list[str]] = {}
    metrics_frames: list[pd.DataFrame] = []
    eval_frames: list[pd.DataFrame] = []
    for d in finished:
        rel = d.relative_to(root).as_posix() or "."
        try:
            row = parse_result(d / RESULT)
        except ValueError as e:
            problems.append(f"{d / RESULT}: {e}; run skipped")
            continue
        info = row.pop("subject_info", None)
        if isinstance(info, dict) and info:
            subject_info[rel] = {str(k): dict(v) for k, v in info.items() if isinstance(v, dict)}
        if warned := row.pop("data_warnings", None):
            data_warnings[rel] = warned
        row["run"], row["path"], row["source"] = rel, str(d), str(root)
        row["finished_at_from"] = RESULT if row["finished_at"] is not None else "mtime"
        if row["finished_at"] is None:
            mtime = (d / RESULT).stat().st_mtime
            row["finished_at"] = pd.Timestamp(mtime, unit="s", tz="UTC")
        rows.append(row)
        for name, frames in ((METRICS, metrics_frames), (EVAL, eval_frames)):
            p = d / name
            if not p.exists():
                continue
            records, bad = read_jsonl(p)
            problems.extend(bad)
            records = [r for r in records if "step" in r]
            if records:
                frames.append(pd.DataFrame(records).assign(run=rel))
    runs = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c not in ("setting", "method_name")])
    runs["method_name"] = runs["method"].map(method_name)
    runs["setting"] = _settings(runs)
    runs = runs[RUN_COLUMNS]
    return Sweep(
        root=root,
        runs=runs,
        metrics=_long(metrics_frames),
        evals=_long(eval_frames),
        incomplete=[d.relative_to(root).as_posix() or "." for d in unfinished],
        problems=problems,
        subject_info=subject_info,
        data_warnings=data_warnings,
    )


def _settings(runs: pd.DataFrame) -> pd.Series:
    """The unit of comparison: the dataset, plus the embedded world's seed unless every run is on the default
    world (0), plus the model when one sweep holds several models."""
    if runs.empty:
        return pd.Series([], dtype=object)
    setting = runs["dataset"].astype(object)
    if runs["world_seed"].fillna(0).ne(0).any():
        world = runs["world_seed"].map(lambda w: "" if pd.isna(w) else f" · world {int(w)}")
        setting = setting + world
    if runs["model"].nunique() > 1:
        setting = setting + " · " + runs["model"]
    return setting


def _finish(sweep: Sweep) -> Sweep:
    """Settings keyed on what their runs ran on, then every run counted once (analysis.inputs): runs set aside
    leave the tables, metrics and evals, and are kept in `set_aside`."""
    runs, notes = key_settings(sweep.runs)
    runs, set_aside, more = count_once(runs)
    sweep.runs = runs.reset_index(drop=True)
    sweep.set_aside = set_aside.reset_index(drop=True)
    sweep.notes = notes + more
    if len(set_aside):
        kept = set(runs["run"])
        sweep.metrics = sweep.metrics[sweep.metrics["run"].isin(kept)].reset_index(drop=True)
        sweep.evals = sweep.evals[sweep.evals["run"].isin(kept)].reset_index(drop=True)
    return sweep


def _long(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run JSONL frames; numeric columns coerced (non-numbers become NaN)."""
    frames = list(frames)
    if not frames:
        return pd.DataFrame(columns=["run", "step"])
    df = pd.concat(frames, ignore_index=True)
    for c in df.columns:
        if c != "run":
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df = df.dropna(subset=["step"])
    df = df.replace([np.inf, -np.inf], np.nan)
    return df


def load_sweeps(roots: Iterable[Path | str]) -> Sweep:
    """Several sweep directories read as one sweep (e.g. one per data set or world): each run keeps its own
    setting, runs are named relative to the directories' common parent, and settings are named over all
    runs together, so a report over separate directories is the report of one sweep that ran them all.
    Runs are pooled into one setting only when they ran on the same inputs, and a run read twice (a copied
    directory) counts once (analysis.inputs). Raises ValueError when one directory lies inside another."""
    given = list(dict.fromkeys(Path(r) for r in roots))
    roots = list(dict.fromkeys(r.resolve() for r in given))
    if len(roots) == 1:
        return load_sweep(given[0])
    names: dict[Path, Path] = {}
    for g in given:
        names.setdefault(g.resolve(), g)
    for a in roots:
        for b in roots:
            if a != b and a in b.parents:
                raise ValueError(f"{b} lies inside {a}: its runs would be read twice; pass one of the two")
    common = Path(os.path.commonpath(roots))
    parts = [_read_sweep(r) for r in roots]

    def rebase(root: Path, rel: str) -> str:
        return (root / rel).relative_to(common).as_posix() or "."

    runs, metrics, evals = [], [], []
    merged = Sweep(root=common, runs=pd.DataFrame(), metrics=pd.DataFrame(), evals=pd.DataFrame())
    for root, part in zip(roots, parts, strict=True):
        runs.append(part.runs.assign(run=[rebase(root, r) for r in part.runs["run"]], source=str(names[root])))
        for frame, out in ((part.metrics, metrics), (part.evals, evals)):
            if len(frame):
                out.append(frame.assign(run=[rebase(root, r) for r in frame["run"]]))
        merged.incomplete += [rebase(root, r) for r in part.incomplete]
        merged.problems += part.problems
        merged.subject_info.update({rebase(root, r): info for r, info in part.subject_info.items()})
        merged.data_warnings.update({rebase(root, r): lines for r, lines in part.data_warnings.items()})
    merged.runs = pd.concat([r for r in runs if len(r)] or [parts[0].runs], ignore_index=True)
    merged.runs["setting"] = _settings(merged.runs)
    merged.metrics, merged.evals = _long(metrics), _long(evals)
    return _finish(merged)
