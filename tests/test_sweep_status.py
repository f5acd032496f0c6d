"""`make status` reads a sweep's run directories relative to the sweep directory: a moved sweep shows its runs, a
copy shows its own state (never the original's), and a directory that holds no sweep is an error."""

from __future__ import annotations

import json
import shutil

from sweep.grid import GridPoint
from sweep.progress import write_plan
from sweep.status import main, sweep_status

POINTS = [GridPoint("sft", 1e-3, None, 0), GridPoint("minor_sft", 1e-3, 0.1, 0)]


def make_sweep(sweep_dir):
    """A planned sweep of two points, the first ended ok, the second not started."""
    run_dirs = [sweep_dir / "sft" / "lr0.001_seed0", sweep_dir / "minor_sft" / "lr0.001_beta0.1_seed0"]
    write_plan(sweep_dir / "sweep_plan.json", POINTS, run_dirs)
    run_dirs[0].mkdir(parents=True)
    (run_dirs[0] / "result.json").write_text(json.dumps({"status": "ok", "accuracy": 0.5, "steps": 10}))
    return run_dirs


def states(sweep_dir):
    return [s.state for s in sweep_status(sweep_dir)]


def test_a_moved_sweep_reads_its_own_runs(tmp_path):
    make_sweep(tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert states(tmp_path / "b") == ["ok", "pending"]
    assert all(s.run_dir.is_relative_to(tmp_path / "b") for s in sweep_status(tmp_path / "b"))


def test_a_copy_shows_its_own_state_not_the_originals(tmp_path):
    original = make_sweep(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    original[1].mkdir(parents=True)  # the original goes on: its second point fails
    (original[1] / "result.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    assert states(tmp_path / "a") == ["ok", "failed"]
    assert states(tmp_path / "copy") == ["ok", "pending"]


def test_a_directory_without_a_sweep_is_an_error(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a sweep\n")
    assert main([str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"SWEEP_DIR={tmp_path / 'notes'} holds no sweep" in err
    make_sweep(tmp_path / "sweep")
    assert main([str(tmp_path / "sweep")]) == 0
    assert "2 points: 1 pending, 1 ok" in capsys.readouterr().out
