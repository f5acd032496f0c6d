"""A real single-node SLURM cluster for dev/CI machines (docs/cluster.md).

``ensure_slurm_cluster()`` runs ``start_cluster.sh`` (idempotent: install slurm-wlm/munge/slurmdbd
through apt when missing, write /etc/slurm/slurm.conf, start the daemons, smoke-test with srun).
It returns ``None`` when the cluster is up, or a one-line reason to skip when SLURM cannot be
installed or started here (not root, apt unreachable, foreign config). A cluster that installed
but failed to come up raises ``RuntimeError``: that is a bug, not an environment limit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_SCRIPT = HERE / "start_cluster.sh"
STOP_SCRIPT = HERE / "stop_cluster.sh"
PARTITION = os.environ.get("SFTSWEEP_SLURM_PARTITION", "debug")

_cached: tuple[bool, str | None] | None = None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ensure_slurm_cluster(timeout_s: float = 600.0) -> str | None:
    """Start (or reuse) the local SLURM cluster; ``None`` if ready, else a skip reason."""
    global _cached
    if _cached is not None:
        return _cached[1]
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        reason = "SLURM cluster needs root (to apt-get install and run slurmctld/slurmd)"
        _cached = (False, reason)
        return reason
    try:
        proc = subprocess.run(
            ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{START_SCRIPT} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode == 0:
        _cached = (True, None)
        return None
    reason = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit {proc.returncode}"
    if proc.returncode == 2:  # cannot install/start here: an environment limit, callers skip
        _cached = (False, reason)
        return reason
    raise RuntimeError(f"SLURM cluster failed to start: {reason}\n{proc.stdout}{proc.stderr}")


def slurm_cluster_is_up() -> bool:
    """Whether a SLURM controller answers here already (then a test session must not stop it)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def stop_slurm_cluster() -> subprocess.CompletedProcess:
    """Stop the daemons that start_cluster.sh started (packages and config stay); returns the script's run."""
    global _cached
    proc = subprocess.run(["bash", str(STOP_SCRIPT)], capture_output=True, text=True, check=False, timeout=120)
    _cached = None
    return proc
