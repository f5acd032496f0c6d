"""What a job's config hash leaves out (a rerun that differs only there reuses an ok result) is written once, in
trainers/runtime/run_dir.py, and docs/architecture.md says the same list."""

from __future__ import annotations

import re

from conftest import REPO_ROOT
from trainers.runtime.run_dir import _UNHASHED, _UNHASHED_TRAIN, config_hash


def _documented_exclusions() -> set[str]:
    text = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paragraph = text[text.index("hash leaves out what does not change the numbers"):]
    paragraph = paragraph[:paragraph.index("sweep skips done points")]
    names = set(re.findall(r"`([^`]+)`", paragraph))
    return {n for n in names if "/" not in n and not n.startswith("_")}  # the source file and its constants' names


def test_the_documented_exclusions_are_the_codes():
    assert _documented_exclusions() == set(_UNHASHED) | {f"train.{key}" for key in _UNHASHED_TRAIN}


def test_an_excluded_key_leaves_the_hash_and_a_setting_changes_it(job_cfg):
    cfg = job_cfg()
    same = job_cfg("train.num_threads=2", "train.report_steps=5", "logger=wandb", run="elsewhere")
    other = job_cfg("train.lr=0.123")
    assert config_hash(same) == config_hash(cfg) != config_hash(other)
