"""A full disk: recognised wherever it comes from, the launching stops with every job recorded that can be,
the report says it could not write (not that jobs failed). The end-to-end case (a tmpfs filled mid-sweep)
is measured in docs/sweeps.md."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus

import analysis.report as report
import sweep.launching as launching
from trainers.runtime.disk import free_mb, no_space, no_space_message

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_no_space_is_recognised_in_the_chain_and_in_a_job_error_passed_on_as_text():
    try:
        try:
            raise ENOSPC
        except OSError as exc:
            raise RuntimeError("could not save") from exc
    except RuntimeError as wrapped:
        assert no_space(wrapped)
    assert no_space(RuntimeError("OSError: [Errno 28] No space left on device"))
    assert no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not no_space(OSError(errno.EACCES, "Permission denied")) and not no_space(None)


def test_no_space_message_names_the_directory_and_what_is_free(tmp_path):
    line = no_space_message(tmp_path / "not" / "made")  # the nearest existing parent's filesystem
    assert line == f"no space left on {tmp_path / 'not' / 'made'}: {free_mb(tmp_path)} MB free; " \
                   "free space and rerun the same command"


class _Launcher:
    """Returns the given JobReturns, as a launcher whose jobs all ended."""

    def __init__(self, returns: list[JobReturn]):
        self.returns = returns

    def launch(self, jobs, initial_job_idx):
        return self.returns


def test_a_full_disk_stops_launching_after_recording_every_job_that_can_be(tmp_path, monkeypatch):
    """Three jobs failed on a full disk; recording the first fails too (no space): the others are still
    recorded, then OSError(ENOSPC) reaches the sweeper, which says so in one line."""
    run_dirs = [tmp_path / name for name in ("a", "b", "c")]
    recorded = []

    def record_failed(job_cfg, run_dir, reason):
        if run_dir == run_dirs[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        recorded.append((run_dir, reason))

    monkeypatch.setattr(launching, "record_failed", record_failed)
    returns = [JobReturn(overrides=[f"seed={i}"], status=JobStatus.FAILED, _return_value=ENOSPC) for i in range(3)]
    with pytest.raises(OSError) as raised:
        launching.launch_recorded(_Launcher(returns), [[f"seed={i}"] for i in range(3)], [None] * 3, run_dirs, 0)
    assert raised.value.errno == errno.ENOSPC
    assert recorded == [(run_dirs[1], "[Errno 28] No space left on device"),
                        (run_dirs[2], "[Errno 28] No space left on device")]


def test_report_that_cannot_write_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    def build_report(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report" / "report.html"))

    monkeypatch.setattr(report, "build_report", build_report)
    assert report.main([str(tmp_path), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert err == f"analysis.report: could not write the report: {no_space_message(Path(tmp_path) / 'report')}\n"
