"""The benches' Qwen2: named shapes, a randomly initialised model of a shape, and a batch of random prompts.

No download: the weights are random (a step's cost does not depend on what they know). Shared by the GPU bench
(bench/gpu.py) and the vocabulary-projection rows (bench/vocab.py), which both time this model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_positions: int


SHAPES = {
    # Qwen2-0.5B's published config (tied embeddings)
    "qwen2-0.5b": ModelShape(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_layers=24,
                             num_heads=14, num_kv_heads=2, max_positions=32_768),
    "tiny": ModelShape(vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                       num_kv_heads=2, max_positions=512),
}


def build_model(shape: ModelShape, device: torch.device) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config).to(device=device, dtype=torch.float32)  # fp32 master weights


def make_batch(shape: ModelShape, batch_size: int, seq_len: int, answer_tokens: int, device: torch.device) -> dict:
    """Full-length random prompts, each ending in `answer_tokens` labelled answer tokens."""
    g = torch.Generator().manual_seed(batch_size)
    input_ids = torch.randint(1, shape.vocab_size, (batch_size, seq_len), generator=g)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer_tokens:] = input_ids[:, -answer_tokens:]
    return {
        "input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device), "n_tokens": torch.full((batch_size,), float(answer_tokens), device=device),
    }
