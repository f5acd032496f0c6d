"""A real single-node SLURM cluster for the tests and dev/CI machines (docs/cluster.md): not part of the product.

``ensure_slurm_cluster()`` runs ``start_cluster.sh`` (idempotent: install slurm-wlm/munge/slurmdbd
through apt when missing, write /etc/slurm/slurm.conf, start the daemons, smoke-test with srun).
It returns ``None`` when the cluster is up, or a one-line reason to skip when SLURM cannot be
installed or started here (not root, apt unreachable, foreign config). A cluster that installed
but failed to come up raises ``RuntimeError``: that is a bug, not an environment limit.
"""
from __future__ import annotations

import os
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


def ensure_slurm_cluster(timeout_s: float = 600.0, recheck: bool = False) -> str | None:
    """Start (or reuse) the local SLURM cluster; ``None`` if ready, else a skip reason. ``recheck`` runs the
    script again although it succeeded before (it restarts a daemon that died and resumes a drained node)."""
    global _cached
    if _cached is not None and not (recheck and _cached[0]):
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
    answered = _run("sinfo", "-h", timeout=10)
    return answered is not None and answered.returncode == 0


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess | None:
    """A SLURM command's run, or None when it is not installed or does not answer in time."""
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _accounting_on(conf: Path = Path("/etc/slurm/slurm.conf")) -> bool:
    try:
        return "accounting_storage/slurmdbd" in conf.read_text()
    except OSError:
        return False


def slurm_problems() -> list[str]:
    """What keeps the local cluster from running the next job as a fresh one would, one phrase each: the
    controller or accounting not answering, a node down or drained (with SLURM's reason), jobs left queued."""
    nodes = _run("sinfo", "-h", "-N", "-o", "%N|%T|%E")
    if nodes is None or nodes.returncode != 0:
        return ["slurmctld does not answer sinfo"]
    problems = []
    for line in nodes.stdout.split("\n"):
        name, state, reason = (line.split("|") + ["", ""])[:3]
        if state and not state.rstrip("*~#").startswith(("idle", "mixed", "allocated", "completing")):
            problems.append(f"node {name} is {state} ({reason or 'no reason given'})")
    queued = _run("squeue", "-h", "-o", "%i %T %R")
    if queued is not None and queued.stdout.strip():
        problems.append("jobs left in the queue: " + "; ".join(queued.stdout.strip().splitlines()))
    if _accounting_on():
        accounted = _run("sacct", "-n", "-X", "-j", "1")
        if accounted is None or accounted.returncode != 0:
            problems.append("slurmdbd does not answer sacct")
    return problems


def slurm_snapshot(log_lines: int = 15) -> str:
    """The cluster's state in words, for a failed test's message: queue, nodes with reasons, log tails."""
    parts = []
    for cmd in (("squeue", "-o", "%i %j %T %M %R"), ("sinfo", "-N", "-o", "%N %T %E"),
                ("sacct", "-X", "-n", "-S", "now-1hour", "-o", "JobID,State,ExitCode,Elapsed")):
        out = _run(*cmd)
        parts.append(f"$ {' '.join(cmd)}\n" + ("(no answer)" if out is None else (out.stdout + out.stderr).strip()))
    for log in ("slurmctld", "slurmd", "slurmdbd"):
        try:
            tail = Path(f"/var/log/slurm/{log}.log").read_text(errors="replace").splitlines()[-log_lines:]
        except OSError:
            continue
        parts.append(f"--- /var/log/slurm/{log}.log (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


def stop_slurm_cluster() -> subprocess.CompletedProcess:
    """Stop the daemons that start_cluster.sh started (packages and config stay); returns the script's run."""
    global _cached
    proc = subprocess.run(["bash", str(STOP_SCRIPT)], capture_output=True, text=True, check=False, timeout=120)
    _cached = None
    return proc
