"""A job's config outside a Hydra run: composed in code, or read back from the agent's job.yaml.

Workers never re-enter Hydra (Hydra initialised once per rank gives per-rank output directories and
races: Hydra issue #2070); the agent writes the resolved config once and every rank reads it.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from trainers.runtime.run_dir import atomic_write_text

# conf/ at the repo root, found the same way whether the app runs as `-m trainers.train` or is imported
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
JOB_CONFIG = Path(".distributed") / "job.yaml"


def compose_job(overrides: list[str]) -> DictConfig:
    """A job config as `python -m trainers.train <overrides>` would see it, for code that runs jobs in-process.

    Hydra's own node is registered as the running app's (paths read `${hydra:runtime.cwd}`) and,
    as in a real job, left out of the returned config.
    """
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def save_job_config(cfg: DictConfig) -> Path:
    """The resolved config, written once (atomically) for the workers, which have no Hydra to resolve it."""
    path = Path(cfg.run_dir).resolve() / JOB_CONFIG
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(resolved)))
    return path


def load_job_config(path: Path | str) -> DictConfig:
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg
