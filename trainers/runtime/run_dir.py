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
from dataclasses import dataclass
from enum import Enum
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

class RunStatus(str, Enum):
    """How a run ended: result.json's `status`, written as the value. A str, so that a status read back from
    JSON compares, hashes and prints as the member does (f"{RunStatus.OK}" is "ok" on every Python).

    ok        trained to its end; scored at its accuracy
    diverged  its loss became non-finite; scored at the base model's accuracy (a failure at its point, not a gap)
    failed    crashed, killed or lost: missing data (trainers/data/selection.py run_score, analysis/estimate.py)
    stopped   ended early by the grid's early stopping (sweep/early_stop_monitor.py)
    pruned    ended early by an Optuna pruner (sweep/pruning.py)
    """

    OK = "ok"
    DIVERGED = "diverged"
    FAILED = "failed"
    STOPPED = "stopped"
    PRUNED = "pruned"

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def is_scored(self) -> bool:
        """The run counts at its point: ok at its accuracy, diverged at the base model's."""
        return self in (RunStatus.OK, RunStatus.DIVERGED)

    @property
    def ended_early(self) -> bool:
        """A sweeper asked the job to stop: neither ok nor failed, the run ended early on purpose."""
        return self in (RunStatus.STOPPED, RunStatus.PRUNED)

    @property
    def is_final(self) -> bool:
        """A rerun of the sweep skips the point: ok, or ended early on purpose (unless the rerun asks for those
        again). Failed and diverged points run again (docs/sweeps.md)."""
        return self is RunStatus.OK or self.ended_early


OK, DIVERGED, FAILED, STOPPED, PRUNED = RunStatus
MISSING = "missing"
"""sweep_summary.json's word for a planned point with no result.json (never run, or killed before it wrote one)."""
SCORED_STATUSES = tuple(s for s in RunStatus if s.is_scored)
STOP_STATUSES = tuple(s for s in RunStatus if s.ended_early)

def point_label(method: str, lr: float, beta: float | None, seed: int, setting: str | None = None) -> str:
    """How the sweep's lines and `make status` name a point: `[setting: ]method lr=… [β=…] seed=…`."""
    where = f"{setting}: " if setting else ""
    return f"{where}{method} lr={lr:g}{'' if beta is None else f' β={beta:g}'} seed={seed}"


@dataclass(frozen=True)
class PlannedPoint:
    """One point of a sweep as its sweeper records it: an entry of sweep_plan.json's and sweep_summary.json's
    `points`. Written and read only through this record (the sweepers, `make status`, the report).

    `run_dir` is as recorded: relative to the sweep directory in the plan (a moved sweep reads its own runs),
    absolute in the summary. `setting` is the grid.settings entry the point belongs to, None without settings.
    A summary's entry also holds the point's `status` and a failure's `error` (sweep/progress.py)."""

    method: str
    lr: float
    beta: float | None
    seed: int
    run_dir: str
    setting: str | None = None

    @property
    def label(self) -> str:
        return point_label(self.method, self.lr, self.beta, self.seed, self.setting)

    def to_json(self) -> dict[str, Any]:
        entry = {"method": self.method, "lr": self.lr, "beta": self.beta, "seed": self.seed, "label": self.label,
                 "run_dir": self.run_dir}
        return {**entry, "setting": self.setting} if self.setting is not None else entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> PlannedPoint:
        """The record of one entry; ValueError naming what is wrong with a malformed one."""
        try:
            beta, setting = entry.get("beta"), entry.get("setting")
            return cls(method=str(entry["method"]), lr=float(entry["lr"]),
                       beta=None if beta is None else float(beta), seed=int(entry.get("seed", 0)),
                       run_dir=str(entry["run_dir"]), setting=None if setting is None else str(setting))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"a planned point is malformed ({type(exc).__name__}: {exc}): {entry!r}") from None


def read_planned_points(path: Path) -> list[PlannedPoint]:
    """The points of a sweep_plan.json or sweep_summary.json; OSError where it cannot be read, ValueError where
    it is not such a file."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))["points"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} has no list of points ({type(exc).__name__}: {exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `points` is not a list")
    return [PlannedPoint.from_json(e) for e in entries]



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
        raise ValueError(f"a stop request ends a job as one of {', '.join(STOP_STATUSES)}, not {status!r}")
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
    """A job is done when its result.json has a final status (RunStatus.is_final) for the same config; a run
    ended early on purpose runs again where `rerun_stopped` asks for it."""
    result = read_result(run_dir)
    status = run_status(result)
    if status is None or not status.is_final or (rerun_stopped and status.ended_early):
        return False
    return result.get("config_hash") == expected_hash


def run_status(result: dict[str, Any] | None) -> RunStatus | None:
    """A result's status as a RunStatus; None for no result, or a status this version does not know."""
    try:
        return RunStatus(result["status"]) if result else None
    except (KeyError, ValueError):
        return None
