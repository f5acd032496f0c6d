"""Shared fixtures: a small embedded world built once per session, and job configs composed from conf/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from trainers.embedded_world import EmbeddedWorld, WorldConfig, ensure_embedded_world
from trainers.train import compose_job

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
