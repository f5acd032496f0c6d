"""Shared fixtures: a small embedded world built once per session, job configs composed from conf/, and
a real single-node SLURM cluster for the tests that ask for it (only with SFTSWEEP_SLURM_TESTS=1)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from sweep.slurm import PARTITION, ensure_slurm_cluster, slurm_cluster_is_up, stop_slurm_cluster
from trainers.job.config import compose_job
from trainers.world import EmbeddedWorld, WorldConfig, ensure_embedded_world

REPO_ROOT = Path(__file__).resolve().parents[1]

# Enough pretraining that the world's facts exist in the model, small enough for seconds.
TINY_WORLD = WorldConfig(
    n_entities=24, n_train_entities=12, n_attributes=4, n_train_questions=48, n_eval_questions=32,
    pretrain_steps=30, batch_size=16, log_every=10,
)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedWorld:
    return ensure_embedded_world(tmp_path_factory.mktemp("world") / "embedded", TINY_WORLD)


@pytest.fixture
def job_cfg(tiny_world: EmbeddedWorld, tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory of short training-job configs on the tiny world, writing under tmp_path."""

    def make(*overrides: str, run: str = "run", cache: Path | None = None) -> DictConfig:
        base = [
            f"run_dir={tmp_path / run}",
            f"paths.cache_dir={cache or tmp_path / 'cache'}",
            f"paths.embedded_dir={tiny_world.root}",
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

    return make


SLURM_TESTS_VAR = "SFTSWEEP_SLURM_TESTS"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A real single-node SLURM (sweep/slurm/start_cluster.sh); yields the default partition name.

    Off unless SFTSWEEP_SLURM_TESTS=1 (.ci/run sets it): starting it apt-installs slurm-wlm, munge and
    MariaDB and runs their daemons. Whatever this session starts it stops at the end (stop_cluster.sh),
    unless a cluster already answered before the session asked for one.
    """
    if os.environ.get(SLURM_TESTS_VAR) != "1":
        pytest.skip(f"SLURM tests are off (they install and start SLURM daemons); set {SLURM_TESTS_VAR}=1 to run them")
    was_up = slurm_cluster_is_up()
    reason = ensure_slurm_cluster()
    if reason is not None:
        pytest.skip(f"no SLURM here: {reason}")
    yield PARTITION
    if not was_up:
        stopped = stop_slurm_cluster()
        assert stopped.returncode == 0, f"stop_cluster.sh failed:\n{stopped.stdout}{stopped.stderr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), every test of the one local SLURM cluster runs in
    the same worker (`--dist loadgroup`), which starts the cluster once and stops it at its end."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
