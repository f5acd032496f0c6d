"""The run directory contract (docs/architecture.md): what one job writes, and how.

    progress.json      where the job is while it runs: process, host, phase, step of max_steps, loss
    metrics.jsonl      one line per logging step
    eval.jsonl         one line per evaluation (step 0 = the base model)
    predictions.jsonl  final evaluation, one line per question
    result.json        written last and atomically
    stop_request.json  written by a sweeper (never the job), atomically: "end now" (read at step boundaries)

and, one level up, the sweep directory's sweep_summary.json (the sweeper's record of every point).

A reader (the sweep's resume logic, analysis/, the status view) can trust any result.json it finds:
it is either absent or complete. Without one, progress.json says whether the job is still at work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
PREDICTIONS = "predictions.jsonl"
RESULT = "result.json"
PROGRESS = "progress.json"
STOP_REQUEST = "stop_request.json"  # the one file a sweeper writes into a job's run directory
SWEEP_PLAN = "sweep_plan.json"  # in the sweep directory: every point the sweeper will run, before it runs it
SWEEP_SUMMARY = "sweep_summary.json"  # in the sweep directory, written by the sweeper (grid or Optuna) at its end

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
SCORED_STATUSES = (OK, DIVERGED)
"""A run that scores: ok at its accuracy, diverged at the base model's (a failure at its point, not a gap).
A failed run is missing data (trainers/data/selection.py run_score, analysis/estimate.py)."""

STOPPED, PRUNED = "stopped", "pruned"
STOP_STATUSES = (STOPPED, PRUNED)
"""How a job asked to stop ends: `stopped` by the grid's early stopping, `pruned` by an Optuna pruner.
Neither ok nor failed: the run ended early on purpose, and is final (a rerun skips it unless asked)."""

LATE_FRACTION = 0.25
"""result.json's train_m_theta, and analysis' train mθ of a run: the mean over the last quarter of its
logged steps (one batch is too noisy to compare methods by)."""


def _jsonable(value: Any) -> Any:
    """Non-finite floats become null: JSON has no NaN, and a diverged loss must still be written."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status): setting it to
    read it back would, for that instant, give other threads' new files no umask at all."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give every file under `root` the mode a plain open() would (0666 less the umask): libraries that write
    through a private temporary file (safetensors in save_pretrained) leave them 0600 whatever the umask."""
    mode = 0o666 & ~current_umask()
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a unique temporary sibling, fsync, then rename over the target: a reader sees the old
    file or the new one, never half of one. The project's one atomic write (analysis uses it too).

    mkstemp creates its file 0600 whatever the umask; the file gets the mode a plain open() would give
    (0666 less the umask), so a team's umask 002/022 lets teammates read results and reports."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({k: _jsonable(v) for k, v in obj.items()}, indent=2) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically (used for predictions)."""
    atomic_write_text(path, "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one line; a line is written whole with one write call, so a crash loses at most it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a truncated last line (a killed job) is skipped."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def reset_logs(run_dir: Path, keep_until_step: int | None) -> None:
    """Prepare the step logs for a (re)run: drop them, or keep the lines up to a resumed checkpoint's step."""
    for name in (METRICS, EVAL):
        path = Path(run_dir) / name
        if keep_until_step is None:
            path.unlink(missing_ok=True)
            continue
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= keep_until_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    for name in (PREDICTIONS, RESULT, STOP_REQUEST):  # a request was for the run that ended
        (Path(run_dir) / name).unlink(missing_ok=True)


def write_progress(run_dir: Path, **fields: Any) -> None:
    """Update progress.json with `fields` (atomically) and the time of this update."""
    path = Path(run_dir) / PROGRESS
    current = read_progress(run_dir) or {}
    atomic_write_json(path, {**current, **fields, "updated_at": time.time()})


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    """The job's progress.json, or None if absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / PROGRESS).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def request_stop(run_dir: Path, status: str, reason: str) -> None:
    """Ask the job running in `run_dir` to end at its next step boundary as `status` (stopped or pruned)."""
    if status not in STOP_STATUSES:
        raise ValueError(f"a stop request ends a job as one of {STOP_STATUSES}, not {status!r}")
    atomic_write_json(Path(run_dir) / STOP_REQUEST, {"status": status, "reason": reason,
                                                     "requested_at": time.time()})


def read_stop_request(run_dir: Path) -> dict[str, Any] | None:
    """The pending stop request, or None. Costs one failed open when there is none (the common case)."""
    try:
        request = json.loads((Path(run_dir) / STOP_REQUEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return request if request.get("status") in STOP_STATUSES else None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The job's result.json, or None if absent or unreadable."""
    path = Path(run_dir) / RESULT
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# Keys that do not change a job's numbers: where it writes, how it logs, how many CPU threads
# or processes it uses (1 process × accumulation k ≡ k processes), the whole grid it belongs to, its resource plan;
# and `method.spec`, the description of the method its name already fixes.
# A rerun that differs only in these reuses an ok result.
_UNHASHED = ("hydra", "run_dir", "paths", "logger", "grid", "prepare_only", "launcher", "strategy",
             "plan")
_UNHASHED_TRAIN = ("num_threads", "progress_bar", "resume", "checkpoint_every_min", "keep_checkpoints",
                   "ddp_timeout", "report_steps")


def hashed_settings(cfg: Any) -> dict[str, Any]:
    """A job's resolved config minus the keys above: what its config hash covers (and a sweep's identity)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    container["run_dir"] = ""
    resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    for key in _UNHASHED:
        resolved.pop(key, None)
    for key in _UNHASHED_TRAIN:
        resolved.get("train", {}).pop(key, None)
    resolved.get("method", {}).pop("spec", None)  # what the method is (trainers/runtime/methods.py), not a setting
    return resolved


def config_hash(cfg: Any) -> str:
    """Hash of a job's hashed settings: equal hash, same experiment."""
    return hashlib.sha256(json.dumps(hashed_settings(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_done(run_dir: Path, expected_hash: str, rerun_stopped: bool = False) -> bool:
    """A job is done when its result.json says "ok" for the same config, or "stopped"/"pruned" (ended early
    on purpose: final, unless `rerun_stopped` asks for it to run again)."""
    result = read_result(run_dir)
    final = ("ok",) if rerun_stopped else ("ok", *STOP_STATUSES)
    return bool(result) and result.get("status") in final and result.get("config_hash") == expected_hash
