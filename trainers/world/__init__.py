"""Floor 4 of trainers/: the embedded default — a synthetic knowledge world, its tokenizer and a tiny
pretrained base model; world 0 shipped in the repo, others built once and cached (`python -m trainers.world`).
Imports runtime, data, model."""

from trainers.world.artifact import WORLD0_SHA256, world_sha256
from trainers.world.build import (
    EmbeddedWorld,
    build_world,
    embedded_model_config,
    ensure_embedded_world,
    seeded_world,
    world_dir,
)
from trainers.world.facts import WorldConfig

__all__ = ["WORLD0_SHA256", "EmbeddedWorld", "WorldConfig", "build_world", "embedded_model_config",
           "ensure_embedded_world", "seeded_world", "world_dir", "world_sha256"]
