"""Floor 4 of trainers/: the embedded default — a synthetic knowledge world, its tokenizer and a tiny
pretrained base model, built once and cached (`python -m trainers.world`). Imports runtime, data, model."""

from trainers.world.build import EmbeddedWorld, embedded_model_config, ensure_embedded_world, seeded_world, world_dir
from trainers.world.facts import WorldConfig

__all__ = ["EmbeddedWorld", "WorldConfig", "embedded_model_config", "ensure_embedded_world", "seeded_world",
           "world_dir"]
