"""What every benchmark row shares: the job config, the tokenized data, and the two model sizes.

The data and the job config are the real ones (`conf/`, the embedded world), so the rows measure
the code a sweep runs, not a stand-in. The ~20-50M model is a random-init Llama over the embedded
tokenizer: step time does not depend on what the weights know.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from trainers.data.mcq import McqItem
from trainers.data.prompts import PromptFormat, Sample
from trainers.job.prepare import load_items, prepare, prompt_format
from trainers.world.build import EmbeddedWorld, ensure_embedded_world
from trainers.world.facts import WorldConfig


@dataclass(frozen=True)
class MediumSpec:
    """Shape of the larger model: Llama, untied FFN, tied embeddings (the default is ~20.7M params)."""

    hidden_size: int = 512
    intermediate_size: int = 1536
    num_layers: int = 6
    num_heads: int = 8


@dataclass
class BenchData:
    """Tokenized train/eval sets of one job config, with the items they came from (for lm-eval prompts)."""

    cfg: DictConfig
    tokenizer: object
    pad_id: int
    letters: list[int]
    fmt: PromptFormat
    train_samples: list[Sample]
    eval_samples: list[Sample]
    eval_items: list[McqItem]


def job_overrides(world: EmbeddedWorld) -> list[str]:
    """Point a job at `world` (already built) with no logger, no checkpoints and no mid-run evaluation."""
    return [
        f"paths.embedded_dir={world.root}",
        "model.embedded=false",
        "logger=none",
        "train.eval_steps=0",
        "train.save_steps=0",
        "train.resume=false",
    ]


def ensure_world(root: Path, config: WorldConfig | None) -> EmbeddedWorld:
    """The embedded world (built on first use, ~3 min on 2 idle cores), or a smaller one for the smoke run."""
    return ensure_embedded_world(root) if config is None else ensure_embedded_world(root, config)


def load_data(cfg: DictConfig) -> tuple[BenchData, PreTrainedModel]:
    """The job's own `prepare` (tokenizer, tokenized data, base model), plus the eval items for lm-eval prompts."""
    prepared = prepare(cfg, reference=False)
    _, eval_items = load_items(cfg.data)
    by_id = {item.id: item for item in eval_items}
    data = BenchData(
        cfg=cfg, tokenizer=prepared.tokenizer, pad_id=prepared.pad_id, letters=prepared.letter_ids,
        fmt=prompt_format(cfg.data),
        train_samples=prepared.train_samples, eval_samples=prepared.eval_samples,
        eval_items=[by_id[s.id] for s in prepared.eval_samples],
    )
    return data, prepared.model


def medium_model(cfg: DictConfig, tokenizer, spec: MediumSpec) -> PreTrainedModel:
    """A random-init Llama of `spec`'s shape over the embedded vocabulary."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=max(256, int(cfg.data.max_length)),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        attn_implementation=cfg.model.attn_implementation,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(getattr(torch, cfg.model.dtype))


def model_summary(model: PreTrainedModel) -> dict:
    """Size and shape, for results.json."""
    c = model.config
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "architecture": type(model).__name__,
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads, "vocab_size": c.vocab_size,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def fresh_copy(model: PreTrainedModel) -> PreTrainedModel:
    """Same initial weights for every variant, so each one starts from the same point."""
    return copy.deepcopy(model)
