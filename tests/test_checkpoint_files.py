"""Which checkpoint folders count, judged on the files alone: a save killed halfway (no trainer_state.json, or
one cut off mid-write) is torn and removed; the highest complete one is resumed (trainers/job/checkpoints.py)."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.job.checkpoints import is_complete, last_complete_checkpoint


def _checkpoint(root: Path, step: int, state: str | None) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_a_half_written_trainer_state_is_not_a_complete_checkpoint(tmp_path):
    whole = _checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    cut = _checkpoint(tmp_path, 4, json.dumps({"global_step": 4, "log_history": [1, 2, 3]})[:17])
    missing = _checkpoint(tmp_path, 6, None)
    assert [is_complete(p) for p in (whole, cut, missing)] == [True, False, False]


def test_torn_checkpoints_above_the_last_complete_one_are_removed_and_it_is_resumed(tmp_path):
    _checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    _checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    _checkpoint(tmp_path, 12, '{"global_step": 12, "log_hi')  # killed while the Trainer wrote its last file
    _checkpoint(tmp_path, 14, None)  # killed before it
    (tmp_path / "checkpoint-99-notes").mkdir()  # not a checkpoint folder: left alone
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    # numeric order, not string order (checkpoint-10 sorts before checkpoint-2 as text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-99-notes"]


def test_no_complete_checkpoint_means_a_fresh_start_and_nothing_torn_is_kept(tmp_path):
    _checkpoint(tmp_path, 3, None)
    assert last_complete_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
