"""The project's one atomic write (trainers.runtime.run_dir): a reader sees the old file or the new one, never a
half-written file or a stray temporary, also with writers racing in threads of one process."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from trainers.runtime import run_dir
from trainers.runtime.run_dir import atomic_write_bytes, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "run" / "result.json"
    atomic_write_text(path, "old")

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(run_dir.os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["result.json"]
    assert atomic_write_bytes(path, b"new") == path and path.read_text() == "new"


def test_racing_writers_in_one_process_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "memo.json"
    texts = [str(i) * 100_000 for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: atomic_write_text(path, t), texts))
    assert path.read_text() in texts and [p.name for p in tmp_path.iterdir()] == ["memo.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_take_the_users_umask(tmp_path, umask, mode):
    """A result, a report file and a saved model's weights are as readable as a plain open() makes them
    (0666 less the umask, worked out by hand): a team's shared sweep is readable by the team."""
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    weights.chmod(0o600)  # what save_pretrained leaves, whatever the umask
    old = os.umask(umask)
    try:
        assert run_dir.current_umask() == umask
        run_dir.atomic_write_json(tmp_path / "run" / "result.json", {"status": "ok"})
        atomic_write_text(tmp_path / "report" / "report.html", "<html></html>")
        run_dir.apply_umask(tmp_path / "model")
    finally:
        os.umask(old)
    for path in (tmp_path / "run" / "result.json", tmp_path / "report" / "report.html", weights):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
