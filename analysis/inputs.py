"""A setting is what its runs ran on, and no run counts twice (docs/report.md, "Settings and repeated runs").

A setting's name (the data set, a world's seed, a model) says what a sweep meant to run; its inputs say what
it ran on. Each result.json records content fingerprints of its data, tokenizer and model
(trainers/job/prepare.py); runs that share a name but not fingerprints are separate settings, named
"<name> [<first hex of the inputs' hash>]", never pooled. A run without fingerprints (an older run, or a job that
failed before it read its inputs) joins its own directory's runs of that name when they agree on one fingerprint;
otherwise runs without fingerprints are told apart by what they do carry — base accuracy, eval size and the
questions (ids and gold answers of predictions.jsonl) — per directory, so a directory and its copy still pool
while different worlds under one name do not; runs that carry none of it (failed jobs) join their name's only
setting, or stay apart as their directory's.

Then each (setting, method, lr, β, seed) read from several directories counts once: copies with the same
results (status, accuracies, mθ, steps, predictions.jsonl's bytes) are one run, read twice; copies with different
results are a conflict and none of them is counted — two results of one seed are not two seeds. A directory
that holds only a failure of the point is missing data the others supply: a repeat. One directory is read as its
sweep wrote it (a search may run a trial twice).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from analysis import method_name
from trainers.runtime.run_dir import FAILED, OK, PREDICTIONS

FINGERPRINT_FIELDS = ("data_fingerprint", "tokenizer_fingerprint", "model_fingerprint")
"""result.json's content hashes of what a run ran on (trainers/job/prepare.py: `input_fingerprints`)."""
POINT = ["setting", "method", "lr", "beta", "seed"]
SIGNATURE = ("status", "accuracy", "m_theta", "train_m_theta", "base_accuracy", "steps", "last_select_accuracy")
"""The result.json numbers that make two copies of a run the same result (with predictions.jsonl's bytes)."""
SHOWN = 3
"""Conflicting points named in a note; the rest are counted."""


def inputs_key(result: Mapping[str, object]) -> str:
    """A result.json's FINGERPRINT_FIELDS as one string, "field=hash;…" ("" when it records none)."""
    found = [(k, v) for k in FINGERPRINT_FIELDS if isinstance(v := result.get(k), str) and v]
    return ";".join(f"{k}={v}" for k, v in found)


def key_settings(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs with each setting split by inputs (module docstring), and one note per split name."""
    if runs.empty:
        return runs, []
    runs = runs.copy()
    keys = _keys(runs)
    notes: list[str] = []
    legacy = runs[keys.str.startswith("legacy")]
    spread = legacy.groupby("setting")["source"].nunique()  # names whose older runs come from several directories
    legacy_sources = sorted(legacy.loc[legacy["setting"].isin(spread[spread > 1].index), "source"].unique())
    for name in sorted(runs["setting"].unique()):
        here = runs["setting"] == name
        distinct = list(dict.fromkeys(keys[here]))
        if len(distinct) < 2:
            continue
        labels = _labels(name, distinct, runs[here], keys[here])
        runs.loc[here, "setting"] = keys[here].map(labels)
        parts = []
        for key in distinct:
            g = runs[here & (keys == key)]
            sources = ", ".join(sorted(g["source"].unique()))
            parts.append(f"{labels[key]} ({len(g)} runs, from {sources}; {_describe(g, key)})")
        notes.append(f"{name}: runs under this name ran on different inputs, so they are {len(distinct)} settings, "
                     f"never pooled: {'; '.join(parts)}.")
    if legacy_sources:
        notes.append(f"Runs without content fingerprints in result.json (older runs) in {', '.join(legacy_sources)}: "
                     "runs from different directories are pooled under one name only where their base accuracy, "
                     "eval size and questions agree.")
    return runs, notes


def count_once(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs counted, runs set aside with a `why`, notes): each point and seed of a setting counts once."""
    columns = [*runs.columns, "why"]
    if runs.empty or runs["source"].nunique() < 2:
        return runs, pd.DataFrame(columns=columns), []
    order = runs.sort_values(["source", "run"]).index
    groups = runs.loc[order].groupby(POINT, dropna=False, sort=False)
    repeats: dict[tuple[str, tuple[str, ...]], int] = {}
    conflicts: dict[str, list[str]] = {}
    aside: dict[int, str] = {}
    for _, g in groups:
        if g["source"].nunique() < 2:
            continue  # one directory is read as its sweep wrote it (a search may run a trial twice)
        by_source = dict(tuple(g.groupby("source", sort=True)))
        finished = {src: sg for src, sg in by_source.items() if (sg["status"] != FAILED).any()}
        copies = finished or by_source  # a directory holding only a failure is missing data another supplies
        results = {src: sorted(repr(_signature(r)) for _, r in sg.iterrows()) for src, sg in copies.items()}
        first = min(copies)
        setting, sources = g["setting"].iloc[0], tuple(by_source)
        if all(res == results[first] for res in results.values()):
            for i in g.index.drop(copies[first].index):
                aside[i] = "repeat"
            repeats[(setting, sources)] = repeats.get((setting, sources), 0) + len(g) - len(copies[first])
        else:
            for i in g.index:
                aside[i] = "conflict"
            conflicts.setdefault(setting, []).append(_conflict(g, pd.concat(copies.values())))
    notes = [f"{setting}: {n} run(s) read more than once (the same point, seed, inputs and results) counted once; "
             f"repeated in {' and '.join(sources)}."
             for (setting, sources), n in sorted(repeats.items())]
    for setting, found in sorted(conflicts.items()):
        more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        notes.append(f"{setting}: {len(found)} point(s) and seed(s) have copies with different results, so none of "
                     f"their copies is counted (two results of one seed are not two seeds): "
                     f"{'; '.join(found[:SHOWN])}{more}.")
    set_aside = runs.loc[list(aside)].assign(why=list(aside.values())) if aside else pd.DataFrame(columns=columns)
    return runs.drop(index=list(aside)), set_aside, notes


def _keys(runs: pd.DataFrame) -> pd.Series:
    """Each run's inputs key: its fingerprints; else its directory's single fingerprint for that name; else a
    "legacy" key from base accuracy, eval size and questions, per (directory, name); a run that carries none of
    these (a job that failed before it read its inputs) joins its name's only other key, when there is one."""
    keys = runs["inputs"].fillna("").astype(str).copy()
    blank: list[pd.Index] = []
    for _, g in runs.groupby(["source", "setting"], sort=False):
        bare = g.index[keys[g.index] == ""]
        if not len(bare):
            continue
        known = g.loc[keys[g.index] != "", "inputs"].unique()
        if len(known) == 1:
            keys[bare] = known[0]
        elif g.loc[bare, "base_accuracy"].notna().any() or _questions(g.loc[bare]):
            keys[bare] = _legacy_key(g.loc[bare])
        else:
            blank.append(bare)
    for bare in blank:
        name = runs.loc[bare[0], "setting"]
        others = set(keys[(runs["setting"] == name) & (keys != "")])
        alone = "legacy:" + json.dumps({"source": runs.loc[bare[0], "source"]})
        keys[bare] = others.pop() if len(others) == 1 else alone
    return keys


def _legacy_key(g: pd.DataFrame) -> str:
    """What runs without fingerprints carry that tells data and model apart: base accuracy, eval size, questions."""
    bases = sorted({round(float(b), 9) for b in g["base_accuracy"].dropna()})
    sizes = sorted({int(n) for n in g["eval_n"].dropna()})
    return "legacy:" + json.dumps({"base": bases, "eval_n": sizes, "questions": _questions(g)})


def _questions(g: pd.DataFrame) -> str:
    """Hash of the (id, gold) pairs of the first ok run's predictions.jsonl, "" when no ok run has one."""
    for r in g[g["status"] == OK].sort_values("run").itertuples():
        path = Path(r.path) / PREDICTIONS
        if not path.is_file():
            continue
        pairs = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                pairs.append(f"{rec['id']}\t{rec.get('gold')}")
        return _sha("\n".join(sorted(pairs)))
    return ""


def _labels(name: str, keys: list[str], runs: pd.DataFrame, run_keys: pd.Series) -> dict[str, str]:
    """Setting names a reader tells apart: base accuracy for runs without fingerprints, else a short hash."""
    labels = {}
    for key in keys:
        base = runs.loc[run_keys == key, "base_accuracy"].dropna()
        tag = f"base {base.mean():.3f}" if key.startswith("legacy") and len(base) else _sha(key)[:6]
        labels[key] = f"{name} [{tag}]"
    if len(set(labels.values())) < len(labels):  # two legacy groups with one base accuracy
        labels = {key: f"{name} [{_sha(key)[:6]}]" for key in keys}
    return labels


def _describe(g: pd.DataFrame, key: str) -> str:
    """The fingerprints a setting's runs share, shortened; or what tells runs without them apart."""
    if key.startswith("legacy"):
        base = g["base_accuracy"].dropna()
        return (f"no fingerprints; base accuracy {base.mean():.3f}" if len(base) else "no fingerprints") + (
            f", {int(g['eval_n'].dropna().iloc[0])} eval questions" if g["eval_n"].notna().any() else "")
    fields = (part.partition("=") for part in key.split(";"))
    return ", ".join(f"{k.removesuffix('_fingerprint')} {v[:6]}" for k, _, v in fields)


def _signature(r: pd.Series) -> tuple:
    """A run's result, as comparable values (NaN as None) and its predictions.jsonl's hash."""
    values = tuple(None if isinstance(r[c], float) and math.isnan(r[c]) else r[c] for c in SIGNATURE)
    path = Path(r["path"]) / PREDICTIONS
    return (*values, hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)


def _conflict(g: pd.DataFrame, copies: pd.DataFrame) -> str:
    """One conflicting point: where it is and what each copy got."""
    r = g.iloc[0]
    beta = "" if pd.isna(r["beta"]) else f" β {r['beta']:g}"
    got = " vs ".join(f"{c['status'] if c['status'] != OK else f'{c.accuracy:.4f}'} in {c['source']}"
                      for _, c in copies.iterrows())
    return f"{method_name(r['method'])} lr {r['lr']:g}{beta} seed {int(r['seed'])} ({got})"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
