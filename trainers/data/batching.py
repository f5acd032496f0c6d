"""Padding samples into model batches, shared by training, the reference pass and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainers.data.prompts import IGNORE_INDEX, Sample


def collate(
    samples: Sequence[Sample], pad_id: int, ref_logps: Sequence[float] | None = None,
    ref_token_logps: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Right-padded batch; labels mask the prompt and the padding.

    Per-token values (`token_sample`, `ref_token_logps`) are flattened in row-major order, the order
    of `trainers.model.logprobs.answer_logps`' per-token log-probs.

    Right padding leaves every real position's logits unchanged under causal attention, so a
    sample's log-prob does not depend on which batch it lands in (up to float noise).
    """
    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, s.prompt_len : n] = input_ids[row, s.prompt_len : n]
        attention_mask[row, :n] = 1
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "n_tokens": torch.tensor([s.n_tokens for s in samples], dtype=torch.float32),
        "answer_pos": torch.tensor([s.prompt_len - 1 for s in samples], dtype=torch.long),
        "gold": torch.tensor([s.gold for s in samples], dtype=torch.long),
        # known here on the host, so that counting tokens never waits for the device
        "n_input_tokens": sum(len(s.input_ids) for s in samples),
    }
    batch["token_sample"] = torch.repeat_interleave(torch.arange(len(samples)), batch["n_tokens"].long())
    if ref_logps is not None:
        batch["ref_logps"] = torch.tensor(list(ref_logps), dtype=torch.float32)
    if ref_token_logps is not None:
        batch["ref_token_logps"] = torch.tensor([v for row in ref_token_logps for v in row], dtype=torch.float32)
    return batch


class TrainCollator:
    """Collator for `transformers.Trainer`.

    Dataset rows are (sample, reference log-prob) or (sample, reference log-prob, reference per-token log-probs).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[tuple]) -> dict[str, Any]:
        with_tokens = all(len(row) > 2 and row[2] is not None for row in rows)
        return collate([row[0] for row in rows], self.pad_id, [row[1] for row in rows],
                       [row[2] for row in rows] if with_tokens else None)
