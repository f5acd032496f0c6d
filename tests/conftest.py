"""Shared fixtures: a small embedded world built once per session, job configs composed from conf/, and
a real single-node SLURM cluster for the tests that ask for it (only with SFTSWEEP_SLURM_TESTS=1)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from deepspeed_cpu_op import extensions_dir
from local_slurm import (
    PARTITION,
    ensure_slurm_cluster,
    slurm_cluster_is_up,
    slurm_problems,
    slurm_snapshot,
    stop_slurm_cluster,
)
from trainers.job.config import compose_job
from trainers.world.build import EmbeddedWorld, ensure_embedded_world
from trainers.world.facts import WorldConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

# Where the libraries the suite drives keep their files when nobody says otherwise: W&B under ~/.cache/wandb,
# ~/.config/wandb and ~/.local/share/wandb, matplotlib under ~/.cache/matplotlib, HF under ~/.cache/huggingface,
# a job's Hydra output under the repository's outputs/. The suite points them all into one temporary directory
# (set before collection, since matplotlib reads MPLCONFIGDIR at import) and forces W&B offline, so that a
# developer who exported WANDB_MODE=online sends nothing and the machine is left as it was found.
_SCRATCH_VAR = "SFTSWEEP_TEST_SCRATCH"
_SCRATCH_ENV = {
    "WANDB_MODE": "offline", "WANDB_DIR": "wandb", "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_CONFIG_DIR": "wandb-config", "WANDB_DATA_DIR": "wandb-data", "WANDB_ARTIFACT_DIR": "wandb-artifacts",
    "MPLCONFIGDIR": "matplotlib", "HF_HOME": "huggingface", "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config", "XDG_DATA_HOME": "xdg-data", "SFTSWEEP_OUTPUTS": "outputs",
}
# tests/mutate.py runs tests in a throwaway copy, beside whatever else the machine is doing: no leftover check there
_NO_LEFTOVER_CHECK = "SFTSWEEP_TESTS_NO_LEFTOVER_CHECK"
# what Python and the dev tools write into a checkout by themselves: not the suite's doing
_TOOL_LEFTOVERS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".import_linter_cache", ".grimp_cache")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """The controller makes the scratch directory and exports it (xdist workers and every job inherit it)."""
    if _is_xdist_worker(config) or os.environ.get(_SCRATCH_VAR):
        return
    scratch = Path(tempfile.mkdtemp(prefix="sftsweep-tests-"))
    os.environ[_SCRATCH_VAR] = str(scratch)
    for var, sub in _SCRATCH_ENV.items():
        os.environ[var] = sub if var == "WANDB_MODE" else str(scratch / sub)
    # compiled torch extensions (DeepSpeed's CPU shm op) stay in the environment, built by `make test`'s install
    extensions = extensions_dir()
    if extensions is not None:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions))
    config._sftsweep_scratch = scratch  # type: ignore[attr-defined]
    if os.environ.get(_NO_LEFTOVER_CHECK) != "1":
        config._sftsweep_before = _machine_snapshot()  # type: ignore[attr-defined]


def _machine_snapshot() -> dict[str, set[str]]:
    """What the suite could leave behind: the checkout's files git does not track (ignored ones included, less
    the tools' own caches), and every path under HOME outside the checkout."""
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False)
    if status.returncode == 0:
        paths = [line[3:] for line in status.stdout.splitlines()]
    else:  # not a git checkout (a copy, as tests/mutate.py makes): every file but the environment's
        paths = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*") if ".venv" not in p.parts]
    repo = {path for path in paths if not any(part in _TOOL_LEFTOVERS for part in Path(path).parts)
            and path.rstrip("/") != ".venv"}
    home, skip = Path.home(), REPO_ROOT
    listing: set[str] = set()
    for root, dirs, files in os.walk(home):
        if Path(root) == skip or skip in Path(root).parents:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if Path(root, d) != skip]
        listing.update(os.path.join(root, name) for name in dirs + files)
    return {"repository (git status --ignored)": repo, f"HOME ({home})": listing}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite fails if it left anything in the checkout or under HOME (the scratch directory goes away)."""
    config = session.config
    if getattr(config, "_sftsweep_scratch", None) is not None:
        shutil.rmtree(config._sftsweep_scratch, ignore_errors=True)  # type: ignore[attr-defined]
    before = getattr(config, "_sftsweep_before", None)
    if before is None:
        return
    after = _machine_snapshot()
    left = {where: sorted(after[where] - before[where]) for where in before if after[where] - before[where]}
    if left:
        lines = [f"the test suite left files behind in {where}: {', '.join(paths[:10])}"
                 + (f" (+{len(paths) - 10} more)" if len(paths) > 10 else "") for where, paths in left.items()]
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        reporter.ensure_newline()
        reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

# Enough pretraining that the world's facts exist in the model, small enough for seconds. One thread: `make test`
# runs two xdist workers on two cores, one building this world while the other runs tests (and test_worlds_sweep
# builds two more): two threads would oversubscribe the box (two builds side by side on the same loaded machine:
# 37 s with 1 thread, 191 s with 2, the same stats and final loss).
TINY_WORLD = WorldConfig(
    n_entities=24, n_train_entities=12, n_attributes=4, n_train_questions=48, n_eval_questions=32,
    pretrain_steps=30, batch_size=16, log_every=10, threads=1,
)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedWorld:
    """Built once for the whole run, in the scratch directory every xdist worker shares (the first worker builds
    it under the world's file lock, the other waits and reads it); read-only for the tests."""
    scratch = os.environ.get(_SCRATCH_VAR)
    root = Path(scratch) / "tiny-world" if scratch else tmp_path_factory.mktemp("world")
    return ensure_embedded_world(root / "embedded", TINY_WORLD)


def tiny_job(world: EmbeddedWorld, root: Path, *overrides: str, run: str = "run",
             cache: Path | None = None) -> DictConfig:
    """A short training job's config on the tiny world, writing under `root` (its run directory `root/run`)."""
    base = [
        f"run_dir={root / run}",
        f"paths.cache_dir={cache or root / 'cache'}",
        f"paths.embedded_dir={world.root}",
        "model.embedded=false",
        "logger=none",
        "train.max_steps=6",
        "train.global_batch_size=8",
        "train.per_device_batch_size=8",
        "train.logging_steps=2",
        "train.eval_steps=3",
        "train.num_threads=1",
    ]
    return compose_job(base + list(overrides))


@pytest.fixture
def job_cfg(tiny_world: EmbeddedWorld, tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory of short training-job configs on the tiny world, writing under tmp_path."""

    def make(*overrides: str, run: str = "run", cache: Path | None = None) -> DictConfig:
        return tiny_job(tiny_world, tmp_path, *overrides, run=run, cache=cache)

    return make


@pytest.fixture
def from_pretrained_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every `AutoModelForCausalLM.from_pretrained` call's keyword arguments, in order (the load still runs)."""
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    load = AutoModelForCausalLM.from_pretrained

    def from_pretrained(*args, **kwargs):
        calls.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    return calls


def _process_tree(root: int) -> list[int]:
    """`root` and every live descendant, read from /proc (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def kill_after_first_checkpoint(code: str, checkpoints: Path, timeout: float = 300) -> list[str]:
    """Run `python -c code` in a session of its own with every training loss hanging once a checkpoint under
    `checkpoints` is complete (tests/fault_site); when the first one is, SIGKILL every process group of the
    job (the agent's and each torchrun worker's) and return the checkpoint folders it left."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fault_site"), "SFTSWEEP_TEST_HANG": str(checkpoints)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout

    def complete() -> bool:
        for state in checkpoints.glob("checkpoint-*/trainer_state.json"):
            try:
                return bool(json.loads(state.read_text()))
            except ValueError:  # being written
                return False
        return False

    try:
        while not complete() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        tree = _process_tree(proc.pid)
        for group in {_group(pid) for pid in tree} - {None}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the job ended by itself (exit {proc.returncode}) before the kill"
    assert complete(), f"no complete checkpoint in {timeout} s"
    return sorted(p.name for p in checkpoints.iterdir())


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def kill_job_tree(pid: int) -> None:
    """SIGKILL every process group of the job started as `pid` (the agent's and each torchrun worker's)."""
    for group in {_group(p) for p in _process_tree(pid)} - {None}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


SLURM_TESTS_VAR = "SFTSWEEP_SLURM_TESTS"
_SLURM_OWNED = [False]  # whether this session started the cluster (then its queue is ours to empty)


@pytest.fixture(scope="session")
def _slurm_session() -> Iterator[str]:
    """A real single-node SLURM (tests/local_slurm/start_cluster.sh); yields the default partition name.

    Off unless SFTSWEEP_SLURM_TESTS=1 (.ci/run sets it): starting it apt-installs slurm-wlm, munge and
    MariaDB and runs their daemons. Whatever this session starts it stops at the end (stop_cluster.sh),
    unless a cluster already answered before the session asked for one.
    """
    if os.environ.get(SLURM_TESTS_VAR) != "1":
        pytest.skip(f"SLURM tests are off (they install and start SLURM daemons); set {SLURM_TESTS_VAR}=1 to run them")
    was_up = slurm_cluster_is_up()
    _SLURM_OWNED[0] = not was_up
    reason = ensure_slurm_cluster()
    if reason is not None:
        # the variable asked for these tests: a cluster that cannot start fails them, never skips them
        pytest.fail(f"{SLURM_TESTS_VAR}=1 but the SLURM cluster did not start: {reason}", pytrace=False)
    yield PARTITION
    if not was_up:
        stopped = stop_slurm_cluster()
        assert stopped.returncode == 0, f"stop_cluster.sh failed:\n{stopped.stdout}{stopped.stderr}"


@pytest.fixture
def slurm_cluster(request: pytest.FixtureRequest) -> str:
    """The session's cluster, as a fresh one would run the test: a daemon that died meanwhile is started
    again and a drained node resumed (start_cluster.sh), jobs left queued are cancelled, and a warning
    names what was found, so that one test's leftovers or a daemon's death never fails the next test."""
    if (os.environ.get(SLURM_TESTS_VAR) == "1" and os.environ.get("PYTEST_XDIST_WORKER")
            and request.config.getvalue("loadgroup") and not request.node.nodeid.endswith("@slurm")):
        pytest.fail("pytest-xdist did not put the SLURM tests in one worker (the --dist loadgroup suffix is missing "
                    f"from {request.node.nodeid}): two workers would share, start and stop one cluster; install the "
                    "pytest range pyproject.toml pins, or run them in one process (pytest -p no:xdist)", pytrace=False)
    partition = request.getfixturevalue("_slurm_session")
    problems = slurm_problems()
    if problems:
        warnings.warn(f"SLURM before {request.node.name}: {'; '.join(problems)}; repaired", stacklevel=1)
        if _SLURM_OWNED[0]:
            subprocess.run(["scancel", "--full"], capture_output=True, timeout=60, check=False)
        reason = ensure_slurm_cluster(recheck=True)
        assert reason is None, reason
        still = [p for p in slurm_problems() if not p.startswith("jobs left")]
        assert not still, f"SLURM could not be repaired: {still}"
    return partition


def run_on_slurm(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`subprocess.run` of a sweep on the local SLURM; past `timeout` it fails with the cluster's state
    (queue, node reasons, accounting, log tails) instead of a bare timeout."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"sweep still running after {timeout:.0f} s; its output:\n{out[-3000:]}\n"
                    f"SLURM now:\n{slurm_snapshot()}", pytrace=False)


def _uses_slurm(item: pytest.Item) -> bool:
    return "slurm_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group into the node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, every test of the one local SLURM cluster runs in the same worker (`--dist
    loadgroup`), which starts the cluster once and stops it at its end.

    The SLURM group goes out first: it is the suite's longest chain (a job requeued and resumed, a cancelled
    one), mostly waiting on the cluster, so the other worker runs the rest beside it. Everything else keeps its
    order: sending every end-to-end `slow` test first as well made `make test` slower (14 min 32 s against
    12 min 58 s on 2 cores: the heavy tests then all run at once)."""
    for item in items:
        if _uses_slurm(item):
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=lambda item: not _uses_slurm(item))
