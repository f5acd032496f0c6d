"""Multiple-choice evaluation: one forward pass per question gives both its answer and its log-prob.

The input is prompt + gold answer. Under causal attention the logits at the last prompt
position do not see the answer, so the option letters' logits there are the model's choice,
while the answer positions of the same pass give lp, hence m_theta on the eval set for free.
The reference pass over a set is the same computation on the initial model. The LM head runs at
those positions only (`trainers.model.logprobs`), never over the whole prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainers.data.batching import collate
from trainers.data.mcq import OPTION_LETTERS
from trainers.data.prompts import Sample
from trainers.model.logprobs import answer_mask, answer_targets, kept_logits, sum_per_sample, token_logps
from trainers.runtime.collectives import dist_ready

log = logging.getLogger(__name__)


@dataclass
class Scores:
    """Per-sample answer log-probs and predicted option index."""

    logps: torch.Tensor  # [N] float32
    preds: torch.Tensor  # [N] long, index into OPTION_LETTERS
    # per-token answer log-probs, all samples' tokens concatenated in sample order (None: prompts only)
    token_logps: torch.Tensor | None = None

    def tokens_per_sample(self, samples: Sequence[Sample]) -> list[list[float]]:
        """`token_logps` cut back into one list per sample (the reference values that kl_sft reads)."""
        if self.token_logps is None:
            raise ValueError("these scores hold no per-token log-probs (they were computed from prompts only)")
        return [t.tolist() for t in torch.split(self.token_logps, [s.n_tokens for s in samples])]

    def accuracy(self, samples: Sequence[Sample]) -> float:
        gold = torch.tensor([s.gold for s in samples])
        return float((self.preds == gold).float().mean())


@torch.no_grad()
def score_samples(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    letter_ids: Sequence[int],
    pad_id: int,
    batch_size: int,
    progress: str | None = None,
    with_logps: bool = True,
) -> Scores:
    """Score every sample in eval mode; the model's train/eval mode is restored afterwards.

    With `with_logps=False` only the prompts are fed (the answer's log-prob is then NaN): the
    choice alone needs no answer tokens, which cuts the tokens read by the answer's length.
    Samples are batched in length order so that padding stays small, then put back in order.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    logps = torch.empty(len(samples), dtype=torch.float32)
    preds = torch.empty(len(samples), dtype=torch.long)
    letters = torch.tensor(list(letter_ids), device=device)
    per_sample_tokens: list[torch.Tensor | None] = [None] * len(samples)
    n_batches = math.ceil(len(order) / batch_size)
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        chunk = [samples[i] if with_logps else _prompt_only(samples[i]) for i in idx]
        batch = collate(chunk, pad_id)
        input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if with_logps:
            # the first answer-predicting position of each row is its last prompt position
            keep = answer_mask(batch["labels"]).to(device)
            logits = kept_logits(model, input_ids, attention_mask, keep)
            tokens = token_logps(logits, answer_targets(batch["labels"]).to(device))
            logps[idx] = sum_per_sample(tokens, keep).float().cpu()
            for i, t in zip(idx, torch.split(tokens.float().cpu(), batch["n_tokens"].long().tolist()), strict=True):
                per_sample_tokens[i] = t
            first_rows = torch.cumsum(batch["n_tokens"].long(), 0) - batch["n_tokens"].long()
            answer_logits = logits[first_rows.to(device)][:, letters]
        else:
            keep = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            keep[torch.arange(len(idx)), batch["answer_pos"]] = True
            answer_logits = kept_logits(model, input_ids, attention_mask, keep.to(device))[:, letters]
            logps[idx] = float("nan")
        preds[idx] = answer_logits.argmax(dim=-1).cpu()
        if progress and (b + 1) % max(1, n_batches // 4) == 0:
            log.info("%s: %d/%d", progress, min((b + 1) * batch_size, len(order)), len(order))
    if was_training:
        model.train()
    all_tokens = torch.cat(per_sample_tokens) if with_logps else None
    return Scores(logps=logps, preds=preds, token_logps=all_tokens)


def _prompt_only(sample: Sample) -> Sample:
    return dataclasses.replace(sample, input_ids=sample.input_ids[: sample.prompt_len])


def prediction_rows(samples: Sequence[Sample], preds: torch.Tensor) -> list[dict]:
    """predictions.jsonl rows: one per question, for paired comparisons between runs."""
    rows = []
    for s, p in zip(samples, preds.tolist(), strict=True):
        row = {"id": s.id, "gold": OPTION_LETTERS[s.gold], "pred": OPTION_LETTERS[p], "correct": p == s.gold}
        if s.subject:
            row["subject"] = s.subject
        rows.append(row)
    return rows


def score_sharded(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    letter_ids: Sequence[int],
    pad_id: int,
    batch_size: int,
    progress: str | None = None,
    with_logps: bool = True,
) -> Scores:
    """`score_samples` split across the job's processes and gathered in sample order, without duplicates.

    Each rank scores every world-th sample of the length order, so every rank sees similar lengths.
    Shorter shards are padded with a repeat of their last sample, so that every rank runs the same
    number of forward passes (FSDP and ZeRO-3 need every rank in every forward); repeats are dropped
    when gathering. On one process this is `score_samples`.
    """
    if not dist_ready():
        return score_samples(model, samples, letter_ids, pad_id, batch_size, progress=progress, with_logps=with_logps)
    n_ranks, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    shard = order[rank::n_ranks]
    padded = shard + [shard[-1] if shard else order[0]] * (math.ceil(len(samples) / n_ranks) - len(shard))
    part = score_samples(model, [samples[i] for i in padded], letter_ids, pad_id, batch_size,
                         progress=progress if rank == 0 else None, with_logps=with_logps)
    tokens = part.tokens_per_sample([samples[i] for i in padded]) if with_logps else [None] * len(padded)
    mine = [(i, float(part.logps[k]), int(part.preds[k]), tokens[k]) for k, i in enumerate(shard)]
    gathered: list[list[tuple] | None] = [None] * n_ranks
    torch.distributed.all_gather_object(gathered, mine)
    rows = sorted((row for rows in gathered for row in rows), key=lambda row: row[0])
    if [row[0] for row in rows] != list(range(len(samples))):
        raise RuntimeError(f"sharded scoring gathered {len(rows)} rows for {len(samples)} samples")
    return Scores(
        logps=torch.tensor([row[1] for row in rows], dtype=torch.float32),
        preds=torch.tensor([row[2] for row in rows], dtype=torch.long),
        token_logps=torch.tensor([v for row in rows for v in row[3]], dtype=torch.float32) if with_logps else None,
    )
