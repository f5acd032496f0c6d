"""A real single-node SLURM cluster (tests/local_slurm/start_cluster.sh) accepts and runs batch jobs.

The ``slurm_cluster`` fixture (tests/conftest.py, session scope) runs only with SFTSWEEP_SLURM_TESTS=1,
starts the cluster once per session and stops what it started at the end; it skips, with the
script's reason, where SLURM cannot be installed or started (not root, apt unreachable, a foreign
/etc/slurm/slurm.conf). Every SLURM test asks for that fixture.
"""
from __future__ import annotations

import socket
import subprocess

import pytest

pytestmark = pytest.mark.slow


def _run(*cmd: str, timeout: float = 60) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def test_sinfo_and_squeue_see_the_node(slurm_cluster: str) -> None:
    host = socket.gethostname().split(".")[0]
    rows = _run("sinfo", "-h", "-N", "-o", "%N|%P|%T").split()
    assert any(r.startswith(f"{host}|{slurm_cluster}*|") for r in rows), rows
    state = [r for r in rows if r.startswith(f"{host}|")][0].split("|")[2]
    assert state in {"idle", "mixed", "allocated", "completing"}, rows
    _run("squeue", "-h", "-o", "%i %T")  # the controller answers queue queries


def test_sbatch_wait_runs_a_job(slurm_cluster: str, tmp_path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\necho \"hello from $SLURM_JOB_ID on $SLURM_JOB_PARTITION\"\n")
    out = tmp_path / "job-%j.out"
    jid = _run(
        "sbatch", "--parsable", "--wait", "-J", "sftsweep-test", "-p", slurm_cluster,
        "-N1", "-n1", "-t", "2", "--mem=100M", "-o", str(out), str(script), timeout=120,
    ).strip().split(";")[0]
    assert jid.isdigit(), jid
    text = (tmp_path / f"job-{jid}.out").read_text()
    assert text.strip() == f"hello from {jid} on {slurm_cluster}", text
    assert jid not in _run("squeue", "-h", "-o", "%i").split()
