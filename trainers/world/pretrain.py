"""The embedded base model: a WordLevel tokenizer over the world's words and a tiny Llama pretrained on them.

Pretraining text: declarative facts about *all* entities, option listings that use the letters, and
multiple-choice-format examples whose answer letter is drawn uniformly at random anew each epoch, so
the base knows the format and the letters (gold-letter log-prob ~ log 1/4, not ~-17 as for an unseen
token) but never which letter is right: its accuracy stays at chance. Fact recall and the base model's
multiple-choice accuracy (with the pipeline's own scorer) are measured after pretraining.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainers.data.prompts import Sample
from trainers.model.scoring import score_samples
from trainers.world.facts import (
    EOS_TOKEN,
    LETTERS,
    PAD_TOKEN,
    PROMPT_TEMPLATE,
    QUESTION_TEMPLATES,
    RESTATEMENTS,
    UNK_TOKEN,
    Facts,
    WorldConfig,
    fact_fields,
    mc_prompt,
    template_words,
)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- tokenizer


def build_tokenizer(facts: Facts):
    """WordLevel vocabulary over every word of the world, in a fixed order (deterministic ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = template_words() | set(facts.names)
    vocab = {tok: i for i, tok in enumerate([PAD_TOKEN, UNK_TOKEN, EOS_TOKEN, *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="right",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens; an unknown word is a bug in the world, so it raises."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, encoded, strict=True):
        if tokenizer.unk_token_id in ids:
            raise ValueError(f"out-of-vocabulary word in {text!r}")
    return encoded


# ------------------------------------------------------------------------------------------- model


def model_config(config: WorldConfig, tokenizer):
    """The base model's LlamaConfig: what `build_model` initialises, and what a resource plan reads."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def build_model(config: WorldConfig, tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)
    return LlamaForCausalLM(model_config(config, tokenizer))


@dataclass(frozen=True)
class Corpus:
    """Token ids of the pretraining text: fixed sentences plus MC-format examples with a random letter."""

    sentences: list[list[int]]
    mc_prompts: list[list[int]]  # the pipeline's prompt for every (fact, question template) of all entities
    mc_restatements: list[list[int]]  # a true restatement of each prompt's fact
    letter_ids: list[int]
    dot_id: int
    eos_id: int
    pad_id: int

    def epoch(self, config: WorldConfig, rng: random.Random) -> list[list[int]]:
        """One epoch of sequences; MC examples are redrawn with a fresh uniform letter every epoch, so the
        base learns the answer format and knows the letters (reference log-probs are not ~-17) but never
        which letter is right: its accuracy stays at chance."""
        out = list(self.sentences)
        for i in rng.sample(range(len(self.mc_prompts)), min(config.format_examples, len(self.mc_prompts))):
            answer = [rng.choice(self.letter_ids)]
            if rng.random() < 0.5:
                answer += [self.dot_id, *self.mc_restatements[i]]
            out.append(self.mc_prompts[i] + answer)
        return out


def build_corpus(facts: Facts, tokenizer, sentences: list[str]) -> Corpus:
    prompts, restatements = [], []
    for e in range(len(facts.names)):
        for a in range(len(facts.attributes)):
            fields = fact_fields(facts, e, a)
            options = dict(zip(LETTERS, facts.attributes[a][1], strict=True))
            for template in QUESTION_TEMPLATES:
                prompts.append(PROMPT_TEMPLATE.format(question=template.format(**fields), **options))
                restatements.append(RESTATEMENTS[len(prompts) % len(RESTATEMENTS)].format(**fields))
    return Corpus(
        sentences=encode_many(tokenizer, sentences),
        mc_prompts=encode_many(tokenizer, prompts),
        mc_restatements=encode_many(tokenizer, restatements),
        letter_ids=tokenizer.convert_tokens_to_ids(list(LETTERS)),
        dot_id=tokenizer.convert_tokens_to_ids("."),
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )


def packed_batches(
    corpus: Corpus, config: WorldConfig, rng: random.Random
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (input_ids, labels) batches: whole sequences, eos-separated, greedily packed into rows."""
    while True:
        encoded = corpus.epoch(config, rng)
        rng.shuffle(encoded)
        rows: list[list[int]] = []
        row: list[int] = []
        for sequence in encoded:
            sequence = sequence + [corpus.eos_id]
            if len(row) + len(sequence) > config.seq_len:
                rows.append(row)
                row = []
            row = row + sequence[: config.seq_len]
        rows.append(row)
        rng.shuffle(rows)
        for start in range(0, len(rows) - config.batch_size + 1, config.batch_size):
            chunk = rows[start : start + config.batch_size]
            ids = torch.full((len(chunk), config.seq_len), corpus.pad_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            for j, r in enumerate(chunk):
                ids[j, : len(r)] = torch.tensor(r)
                labels[j, : len(r)] = torch.tensor(r)
            yield ids, labels


def lr_factor(step: int, config: WorldConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.pretrain_steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pretrain(model, corpus: Corpus, config: WorldConfig) -> float:
    """Causal-LM pretraining on the packed sentences; returns the last logged loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    batches = packed_batches(corpus, config, random.Random(config.seed + 1))
    model.train()
    start, running, last = time.monotonic(), 0.0, float("nan")
    for step in range(1, config.pretrain_steps + 1):
        ids, labels = next(batches)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % config.log_every == 0 or step == config.pretrain_steps:
            last = running / (config.log_every if step % config.log_every == 0 else step % config.log_every)
            running = 0.0
            logger.info(
                "pretrain step %d/%d loss %.4f elapsed %.1fs",
                step,
                config.pretrain_steps,
                last,
                time.monotonic() - start,
            )
    model.eval()
    return last


@torch.no_grad()
def last_logits(model, prompts: list[list[int]], pad_id: int, batch: int = 256) -> torch.Tensor:
    """Logits at each prompt's last position (right padding, so causal attention needs no mask)."""
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for j, p in enumerate(chunk):
            ids[j, : len(p)] = torch.tensor(p)
        logits = model(input_ids=ids).logits.float()
        last = torch.tensor([len(p) - 1 for p in chunk])
        out.append(logits[torch.arange(len(chunk)), last])
    return torch.cat(out)


def fact_recall(model, tokenizer, facts: Facts) -> float:
    """Share of all (fact, question phrase) pairs whose value is the base model's top-1 next word."""
    prompts, gold = [], []
    for e in range(len(facts.names)):
        for a in range(len(facts.attributes)):
            fields = fact_fields(facts, e, a)
            for template in QUESTION_TEMPLATES:
                prompts.append(template.format(**fields))
                gold.append(tokenizer.convert_tokens_to_ids(fields["value"]))
    prompts = encode_many(tokenizer, prompts)
    pred = last_logits(model, prompts, tokenizer.pad_token_id).argmax(-1)
    return (pred == torch.tensor(gold)).float().mean().item()


def mc_scores(model, tokenizer, rows: list[dict]) -> tuple[float, float]:
    """The pipeline's own evaluator (score_samples) on answers cut to the gold letter: the accuracy, and
    the mean log-prob of the gold letter (far below log(1/4): the base never learned the letters)."""
    letter_ids = tokenizer.convert_tokens_to_ids(list(LETTERS))
    prompts = encode_many(tokenizer, [mc_prompt(r) for r in rows])
    gold = [LETTERS.index(r["answer"]) for r in rows]
    samples = [Sample(id=r["id"], subject="", input_ids=[*p, letter_ids[g]], prompt_len=len(p), gold=g)
               for r, p, g in zip(rows, prompts, gold, strict=True)]
    scores = score_samples(model, samples, letter_ids, tokenizer.pad_token_id, batch_size=256)
    return scores.accuracy(samples), scores.logps.mean().item()
