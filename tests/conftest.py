"""Shared fixtures: a small embedded world built once per session, and job configs composed from conf/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from trainers.embedded_world import EmbeddedWorld, WorldConfig, ensure_embedded_world

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

# Enough pretraining that the world's facts exist in the model, small enough for seconds.
TINY_WORLD = WorldConfig(
    n_entities=24, n_train_entities=12, n_attributes=4, n_train_questions=48, n_eval_questions=32,
    pretrain_steps=30, batch_size=16, log_every=10,
)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedWorld:
    return ensure_embedded_world(tmp_path_factory.mktemp("world") / "embedded", TINY_WORLD)


def compose_job(overrides: list[str]) -> DictConfig:
    """The job config as `python -m trainers.train <overrides>` would see it.

    Hydra's own node is registered as the running app's (paths read `${hydra:runtime.cwd}`)
    and, as in a real job, left out of the returned config.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
