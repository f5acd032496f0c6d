"""The package layout holds: trainers/ in floors that import only downward, no import circle, and the
top-level rules (sweep/ and analysis/ never import each other; nothing imports bench/ or the test
helpers). The contracts live in pyproject.toml ([tool.importlinter]); `make lint` runs them too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from conftest import REPO_ROOT

PACKAGES = ("trainers", "sweep", "analysis", "bench", "hydra_plugins")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the packages under `root`, with `root`'s pyproject.toml contracts."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: import-linter is a dev dependency (make test installs it)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def copy_of_the_packages(tmp_path: Path) -> Path:
    """The repository's packages and contracts in a scratch directory, to break on purpose."""
    for name in PACKAGES:
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def import_circles(package: str) -> list[list[str]]:
    """Strongly connected sets of modules (more than one) in `package`'s import graph (Tarjan)."""
    graph = grimp.build_graph(package, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == module:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_import_contracts_hold_on_the_repository():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_of_ours_has_an_import_circle(package):
    """hydra_plugins is a namespace shared with the installed Hydra plugins: only our own plugins count."""
    ours = [circle for circle in import_circles(package)
            if package != "hydra_plugins" or all(m.startswith("hydra_plugins.sftsweep_") for m in circle)]
    assert ours == []


def test_a_function_local_import_that_closes_a_circle_is_found(tmp_path, monkeypatch):
    root = copy_of_the_packages(tmp_path)
    timing = root / "bench" / "timing.py"
    timing.write_text(timing.read_text() + "\n\ndef _late():\n    from bench import vocab  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    assert any({"bench.timing", "bench.vocab"} <= set(circle) for circle in import_circles("bench"))


def test_an_upward_import_breaks_the_floor_contract(tmp_path):
    root = copy_of_the_packages(tmp_path)
    losses = root / "trainers" / "model" / "losses.py"
    losses.write_text(losses.read_text() + "\nfrom trainers.job import prepare  # noqa: E402  (model -> job: upward)\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "trainers.model is not allowed to import trainers.job" in result.stdout


def test_analysis_importing_sweep_breaks_the_independence_contract(tmp_path):
    root = copy_of_the_packages(tmp_path)
    planned = root / "analysis" / "planned.py"
    planned.write_text(planned.read_text() + "\nimport sweep.grid  # noqa: E402\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "analysis is not allowed to import sweep" in result.stdout


# What a sweep's own process imports: Hydra's plugin scan imports every module of hydra_plugins/, and the entry
# is the sweeper's main module (and a joblib worker's, and a submitit job's). None of them trains.
SWEEPER_SIDE = ("trainers.train", "sweep.status", "hydra_plugins.sftsweep_grid_sweeper",
                "hydra_plugins.sftsweep_optuna_sweeper", "hydra_plugins.sftsweep_joblib_launcher",
                "hydra_plugins.sftsweep_submitit_launcher")
HEAVY = ("torch", "transformers", "datasets", "accelerate", "deepspeed", "peft", "pandas")


def test_the_sweepers_process_imports_no_torch_until_a_job_runs_in_it():
    """The modules a sweeper's process loads import none of the training stack (torch, transformers: some 5 s of
    CPU per process on this machine); the recipe they name is imported where a job runs."""
    code = (f"import importlib, sys\nfor m in {SWEEPER_SIDE!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"the sweeper's side imports {out.stdout.strip()}"


def test_a_jobs_entry_in_a_sweep_checks_and_hands_off_without_the_training_stack(tiny_world, tmp_path):
    """What a job's entry does in the launcher's process before it hands the job to the process that trains it
    (trainers/train.py: the device check, validation, a quiet console) loads no torch or transformers on a
    machine without a GPU driver: a joblib worker or the local launcher's sweeper would pay some 4 s of CPU per
    process for nothing."""
    overrides = [f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                 f"paths.embedded_dir={tiny_world.root}", "model.embedded=false", "logger=none"]
    code = ("import logging, sys\n"
            "from trainers.job.config import compose_job\n"
            "from trainers.job.console import quiet_console\n"
            "from trainers.job.validate import check_devices, validate_config\n"
            f"cfg = compose_job({overrides!r})\n"
            "check_devices(cfg)\nvalidate_config(cfg)\n"
            "with quiet_console(True, library_bars=False):\n    logging.getLogger('x').info('handed off')\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", f"a job's entry imports {out.stdout.strip()}"


def test_gpus_are_counted_by_torch_only_where_a_gpu_driver_is(monkeypatch, tmp_path):
    """No driver node: 0 GPUs, and torch is never asked (an import of it would fail here). A driver node: torch's
    count, whatever it is."""
    import torch

    from trainers.runtime import process

    monkeypatch.setattr(process, "GPU_DRIVER_NODES", (str(tmp_path / "no-nvidiactl"),))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert process.gpus_visible() == 0
    monkeypatch.setitem(sys.modules, "torch", torch)
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(process, "GPU_DRIVER_NODES", (str(tmp_path / "no-nvidiactl"), str(tmp_path / "nvidiactl")))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert process.gpus_visible() == 3
