"""The embedded default: a synthetic knowledge world, a tokenizer and a tiny pretrained base model.

On a machine with no model hub, ``make sweep`` still needs a base model that *knows* facts it was never
fine-tuned on, and multiple-choice data in the real datasets' CSV shape. This module builds that once,
deterministically, and caches it (see DESIGN.md section 4):

* a world of entities (one-token names) with attributes; every attribute has exactly four values, always
  listed as options A-D in the same order, so the gold letter is a fixed function of the value (shuffled
  options were not learnable at this scale);
* a WordLevel tokenizer over the world's words (every name one token), as ``PreTrainedTokenizerFast``;
* a 2-layer Llama pretrained on declarative facts about *all* entities, option listings that use the
  letters, and multiple-choice-format examples whose answer letter is drawn uniformly at random anew each
  epoch: the base knows the format and the letters (gold-letter log-prob ~ log 1/4, not ~-17 as for an
  unseen token) but never which letter is right, so its accuracy stays at chance (measured 25.6%);
* ``train.csv``: multiple-choice questions about some entities, answers with a letter and 0-3 restatements
  of the fact (varying answer length, so MinorSFT and SFT-using-DPO differ);
  ``eval.csv``: questions about the other, held-out entities, whose facts the base saw only in pretraining.

``ensure_embedded_world(root)`` returns the cached world, or builds it under a file lock into a temporary
sibling directory that is renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from trainers.mcq_data import OPTION_LETTERS

logger = logging.getLogger(__name__)

# Bump when the world's content or the build procedure changes: a cached world of another version is rebuilt.
WORLD_VERSION = 2

LETTERS: tuple[str, ...] = OPTION_LETTERS  # the pipeline's option letters: the world's CSVs are read by it
CSV_COLUMNS: tuple[str, ...] = ("id", "question", "A", "B", "C", "D", "answer", "explanation")
PAD_TOKEN, UNK_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "</s>"

# Every attribute has exactly four values, all distinct words across attributes, listed in this fixed order.
ATTRIBUTES: tuple[tuple[str, tuple[str, str, str, str]], ...] = (
    ("color", ("red", "blue", "green", "yellow")),
    ("size", ("tiny", "small", "large", "huge")),
    ("shape", ("round", "square", "flat", "tall")),
    ("taste", ("sweet", "sour", "bitter", "salty")),
    ("pet", ("cat", "dog", "fish", "bird")),
    ("city", ("Paris", "Cairo", "Berlin", "Madrid")),
    ("sport", ("tennis", "golf", "rugby", "chess")),
    ("food", ("rice", "bread", "soup", "cheese")),
    ("metal", ("gold", "silver", "iron", "copper")),
    ("season", ("spring", "summer", "autumn", "winter")),
    ("weather", ("sunny", "rainy", "windy", "snowy")),
    ("job", ("baker", "farmer", "doctor", "pilot")),
    ("drink", ("tea", "coffee", "milk", "juice")),
    ("fabric", ("wool", "silk", "cotton", "linen")),
    ("gem", ("ruby", "pearl", "jade", "opal")),
    ("tree", ("oak", "pine", "elm", "birch")),
    ("mood", ("happy", "sad", "calm", "angry")),
    ("sound", ("quiet", "loud", "shrill", "deep")),
    ("flower", ("rose", "tulip", "lily", "daisy")),
    ("music", ("jazz", "rock", "folk", "blues")),
)

# Pretraining states every fact with each template; each template ends on the value, and the questions are
# these templates cut before the value, so the prompt ends where pretraining predicted the answer's value.
FACT_TEMPLATES: tuple[str, ...] = (
    "The {attr} of {name} is {value} .",
    "{name} has the {attr} {value} .",
)
QUESTION_TEMPLATES: tuple[str, ...] = tuple(t.removesuffix(" {value} .") for t in FACT_TEMPLATES)
# Explanations restate the fact 0-3 times with these (their lengths differ, so answer lengths vary).
RESTATEMENTS: tuple[str, ...] = (
    "{name} has the {attr} {value} .",
    "The {attr} of {name} is {value} .",
    "So the {attr} is {value} .",
)
LISTING_TEMPLATE = (
    "The {attr} options are " + " ".join(f"{letter} . {{v{i}}}" for i, letter in enumerate(LETTERS)) + " ."
)
PROMPT_TEMPLATE = "Question : A . {A} B . {B} C . {C} D . {D} . {question}"

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class WorldConfig:
    """Everything the world depends on; the defaults are the real embedded world, tests pass smaller ones."""

    seed: int = 0
    # world
    n_entities: int = 400
    n_train_entities: int = 200  # the other n_entities - n_train_entities are held out for eval.csv
    n_attributes: int = 8
    n_train_questions: int = 3200
    n_eval_questions: int = 1600
    max_restatements: int = 3
    listing_repeats: int = 20  # copies of each attribute's option listing per pretraining epoch
    format_examples: int = 300  # MC-format examples (prompt, random letter) per pretraining epoch
    # model (Llama, tied embeddings, no dropout)
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    # pretraining
    # 900 steps: fact recall 0.9997, base accuracy 0.276, 116 s on 2 idle cores (1600: 1.000, 0.241, 193 s)
    pretrain_steps: int = 900
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0  # 0.1 made the downstream learning-rate curve flat and noisy (DESIGN 4)
    threads: int = 2  # ~0.075 s/step on 2 idle cores; on an oversubscribed box 1 thread is 5-9x faster
    log_every: int = 100


@dataclass(frozen=True)
class EmbeddedWorld:
    """Paths of a built world; ``model_dir`` loads with AutoTokenizer / AutoModelForCausalLM."""

    root: Path
    model_dir: Path
    train_csv: Path
    eval_csv: Path


@dataclass(frozen=True)
class _Facts:
    """The sampled world: names, the attributes in use, and each entity's value index per attribute."""

    names: tuple[str, ...]
    attributes: tuple[tuple[str, tuple[str, str, str, str]], ...]
    values: tuple[tuple[int, ...], ...]  # values[entity][attribute] in 0..3 (== index of the gold letter)
    train_entities: tuple[int, ...]
    eval_entities: tuple[int, ...]


# ----------------------------------------------------------------------------------------------- world


def _make_names(rng: random.Random, n: int, reserved: set[str]) -> list[str]:
    """n distinct capitalised CVCV names that collide with no other word, so each is its own token."""
    pool = [c1 + v1 + c2 + v2 for c1 in _CONSONANTS for v1 in _VOWELS for c2 in _CONSONANTS for v2 in _VOWELS]
    pool = [p.capitalize() for p in pool if p.capitalize() not in reserved and p not in reserved]
    if n > len(pool):
        raise ValueError(f"n_entities={n} exceeds the {len(pool)} available names")
    return rng.sample(pool, n)


def _template_words() -> set[str]:
    """Every non-name word of the templates and attributes (names must avoid them)."""
    words = set(LETTERS) | {"Question", ":", "."}
    for attr, values in ATTRIBUTES:
        words.add(attr)
        words.update(values)
    texts = (LISTING_TEMPLATE, *FACT_TEMPLATES, *RESTATEMENTS)
    for text in texts:
        words.update(w for w in text.split() if not w.startswith("{"))
    return words


def _make_facts(config: WorldConfig) -> _Facts:
    """Sample names, facts and the train/held-out entity split from the seed alone."""
    if not 0 < config.n_attributes <= len(ATTRIBUTES):
        raise ValueError(f"n_attributes must be in 1..{len(ATTRIBUTES)}")
    if not 0 < config.n_train_entities < config.n_entities:
        raise ValueError("need 0 < n_train_entities < n_entities")
    if not 0 <= config.max_restatements <= len(RESTATEMENTS):
        raise ValueError(f"max_restatements must be in 0..{len(RESTATEMENTS)}")
    rng = random.Random(config.seed)
    names = _make_names(rng, config.n_entities, _template_words())
    attributes = ATTRIBUTES[: config.n_attributes]
    values = tuple(tuple(rng.randrange(4) for _ in attributes) for _ in names)
    order = list(range(config.n_entities))
    rng.shuffle(order)
    train = tuple(sorted(order[: config.n_train_entities]))
    held_out = tuple(sorted(order[config.n_train_entities :]))
    return _Facts(tuple(names), attributes, values, train, held_out)


def _fact_fields(facts: _Facts, entity: int, attribute: int) -> dict[str, str]:
    attr, options = facts.attributes[attribute]
    return {"name": facts.names[entity], "attr": attr, "value": options[facts.values[entity][attribute]]}


def _pretraining_sentences(facts: _Facts, config: WorldConfig) -> list[str]:
    """Declarative facts about every entity plus letter-labelled option listings; no question -> letter."""
    sentences = [
        template.format(**_fact_fields(facts, e, a))
        for e in range(len(facts.names))
        for a in range(len(facts.attributes))
        for template in FACT_TEMPLATES
    ]
    for attr, options in facts.attributes:
        listing = LISTING_TEMPLATE.format(attr=attr, **{f"v{i}": v for i, v in enumerate(options)})
        sentences.extend([listing] * config.listing_repeats)
    return sentences


def _build_corpus(facts: _Facts, tokenizer, sentences: list[str]) -> _Corpus:
    prompts, restatements = [], []
    for e in range(len(facts.names)):
        for a in range(len(facts.attributes)):
            fields = _fact_fields(facts, e, a)
            options = dict(zip(LETTERS, facts.attributes[a][1], strict=True))
            for template in QUESTION_TEMPLATES:
                prompts.append(PROMPT_TEMPLATE.format(question=template.format(**fields), **options))
                restatements.append(RESTATEMENTS[len(prompts) % len(RESTATEMENTS)].format(**fields))
    return _Corpus(
        sentences=_encode_many(tokenizer, sentences),
        mc_prompts=_encode_many(tokenizer, prompts),
        mc_restatements=_encode_many(tokenizer, restatements),
        letter_ids=tokenizer.convert_tokens_to_ids(list(LETTERS)),
        dot_id=tokenizer.convert_tokens_to_ids("."),
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )


def _mc_rows(
    facts: _Facts, entities: Sequence[int], n: int, max_restatements: int, rng: random.Random, prefix: str
) -> list[dict]:
    """n multiple-choice rows, each a distinct (entity, attribute, question template) of the given entities."""
    pool = [(e, a, q) for e in entities for a in range(len(facts.attributes)) for q in range(len(QUESTION_TEMPLATES))]
    if n > len(pool):
        raise ValueError(f"asked for {n} {prefix} questions but only {len(pool)} facts exist")
    rows = []
    for i, (e, a, q) in enumerate(rng.sample(pool, n)):
        fields = _fact_fields(facts, e, a)
        k = rng.randrange(max_restatements + 1)  # 0..k restatements: answer length varies per sample
        explanation = " ".join(t.format(**fields) for t in rng.sample(RESTATEMENTS, k))
        options = facts.attributes[a][1]
        rows.append(
            {
                "id": f"{prefix}-{i:05d}",
                "question": QUESTION_TEMPLATES[q].format(**fields),
                **dict(zip(LETTERS, options, strict=True)),
                "answer": LETTERS[facts.values[e][a]],
                "explanation": explanation,
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _mc_prompt(row: dict) -> str:
    """The pipeline's prompt rendering (used here only to check the vocabulary covers it)."""
    return PROMPT_TEMPLATE.format(**row)


def _mc_answer(row: dict) -> str:
    return f"{row['answer']} . {row['explanation']}" if row["explanation"] else row["answer"]


# ------------------------------------------------------------------------------------------- tokenizer


def _build_tokenizer(facts: _Facts):
    """WordLevel vocabulary over every word of the world, in a fixed order (deterministic ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = _template_words() | set(facts.names)
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


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens; an unknown word is a bug in the world, so it raises."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, encoded, strict=True):
        if tokenizer.unk_token_id in ids:
            raise ValueError(f"out-of-vocabulary word in {text!r}")
    return encoded


# ------------------------------------------------------------------------------------------- model


def _build_model(config: WorldConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
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
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(model_config)


@dataclass(frozen=True)
class _Corpus:
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


def _packed_batches(
    corpus: _Corpus, config: WorldConfig, rng: random.Random
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


def _lr_factor(step: int, config: WorldConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.pretrain_steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _pretrain(model, corpus: _Corpus, config: WorldConfig) -> float:
    """Causal-LM pretraining on the packed sentences; returns the last logged loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    batches = _packed_batches(corpus, config, random.Random(config.seed + 1))
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
def _last_logits(model, prompts: list[list[int]], pad_id: int, batch: int = 256) -> torch.Tensor:
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


def _fact_recall(model, tokenizer, facts: _Facts) -> float:
    """Share of all (fact, question phrase) pairs whose value is the base model's top-1 next word."""
    prompts, gold = [], []
    for e in range(len(facts.names)):
        for a in range(len(facts.attributes)):
            fields = _fact_fields(facts, e, a)
            for template in QUESTION_TEMPLATES:
                prompts.append(template.format(**fields))
                gold.append(tokenizer.convert_tokens_to_ids(fields["value"]))
    prompts = _encode_many(tokenizer, prompts)
    pred = _last_logits(model, prompts, tokenizer.pad_token_id).argmax(-1)
    return (pred == torch.tensor(gold)).float().mean().item()


def _mc_scores(model, tokenizer, rows: list[dict]) -> tuple[float, float]:
    """The pipeline's own evaluator (score_samples) on answers cut to the gold letter: the accuracy, and
    the mean log-prob of the gold letter (far below log(1/4): the base never learned the letters)."""
    from trainers.evaluate import score_samples
    from trainers.prompts import Sample

    letter_ids = tokenizer.convert_tokens_to_ids(list(LETTERS))
    prompts = _encode_many(tokenizer, [_mc_prompt(r) for r in rows])
    gold = [LETTERS.index(r["answer"]) for r in rows]
    samples = [Sample(id=r["id"], subject="", input_ids=[*p, letter_ids[g]], prompt_len=len(p), gold=g)
               for r, p, g in zip(rows, prompts, gold, strict=True)]
    scores = score_samples(model, samples, letter_ids, tokenizer.pad_token_id, batch_size=256)
    return scores.accuracy(samples), scores.logps.mean().item()


# ------------------------------------------------------------------------------------------- build


def _world_paths(root: Path) -> EmbeddedWorld:
    return EmbeddedWorld(root=root, model_dir=root / "model", train_csv=root / "train.csv", eval_csv=root / "eval.csv")


def _manifest_matches(root: Path, config: WorldConfig) -> bool:
    """A world is reusable only if complete and built by this version from this exact config."""
    try:
        manifest = json.loads((root / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    paths = _world_paths(root)
    files = (paths.train_csv, paths.eval_csv, paths.model_dir / "config.json", paths.model_dir / "tokenizer.json")
    same = manifest.get("version") == WORLD_VERSION and manifest.get("config") == dataclasses.asdict(config)
    return same and all(f.is_file() for f in files)


def _build(out: Path, config: WorldConfig) -> dict:
    """Build the whole world into ``out``; returns the build stats."""
    t0 = time.monotonic()
    logger.info("embedded world: sampling %d entities x %d attributes", config.n_entities, config.n_attributes)
    facts = _make_facts(config)
    rng = random.Random(config.seed + 2)
    train_rows = _mc_rows(facts, facts.train_entities, config.n_train_questions, config.max_restatements, rng, "train")
    eval_rows = _mc_rows(facts, facts.eval_entities, config.n_eval_questions, config.max_restatements, rng, "eval")

    logger.info("embedded world: building the tokenizer")
    tokenizer = _build_tokenizer(facts)
    rows = train_rows + eval_rows  # the pipeline must never meet an unknown word
    _encode_many(tokenizer, [_mc_prompt(r) for r in rows] + [_mc_answer(r) for r in rows])
    sentences = _pretraining_sentences(facts, config)
    corpus = _build_corpus(facts, tokenizer, sentences)

    model = _build_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "embedded world: pretraining %d params on %d sentences, %d steps of %dx%d tokens",
        n_params,
        len(sentences),
        config.pretrain_steps,
        config.batch_size,
        config.seq_len,
    )
    loss = _pretrain(model, corpus, config)

    logger.info("embedded world: measuring fact recall and base accuracy")
    recall = _fact_recall(model, tokenizer, facts)
    base_accuracy, gold_letter_logprob = _mc_scores(model, tokenizer, eval_rows)

    logger.info("embedded world: writing %s", out)
    _write_csv(out / "train.csv", train_rows)
    _write_csv(out / "eval.csv", eval_rows)
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    return {
        "n_params": n_params,
        "vocab_size": len(tokenizer),
        "n_pretraining_sentences": len(sentences),
        "final_pretraining_loss": loss,
        "fact_recall": recall,
        "base_eval_accuracy": base_accuracy,
        "base_gold_letter_logprob": gold_letter_logprob,
        "build_seconds": round(time.monotonic() - t0, 1),
        "torch_version": torch.__version__,
    }


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a complete build into place; a stale world is moved aside first (rename cannot overwrite)."""
    stale = None
    if dst.exists():
        stale = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.stale-"))
        os.replace(dst, stale / "old")
    os.replace(src, dst)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Delete temporary siblings of a build that was killed; only called while holding the lock."""
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.stale-*"):
        for leftover in root.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_embedded_world(root: Path, config: WorldConfig = WorldConfig()) -> EmbeddedWorld:
    """Return the world at ``root``, building it first unless a complete one of this version/config is there.

    Safe for concurrent callers: one builds under a file lock while the others wait, then reuse it.
    """
    root = Path(root).resolve()
    if _manifest_matches(root, config):
        return _world_paths(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _manifest_matches(root, config):  # built by another process while we waited
            return _world_paths(root)
        logger.info("embedded world: building into %s (version %d)", root, WORLD_VERSION)
        _remove_leftovers(root)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the world is a shared cache
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)  # fixed thread count: speed on 2 cores, reproducible weights
        try:
            stats = _build(tmp, config)
            manifest = {"version": WORLD_VERSION, "config": dataclasses.asdict(config), "stats": stats}
            (tmp / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            _replace_dir(tmp, root)
        finally:
            torch.set_num_threads(threads)
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("embedded world: done in %.1fs, fact recall %.3f", stats["build_seconds"], stats["fact_recall"])
    return _world_paths(root)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or reuse) the embedded default world and base model.")
    parser.add_argument("--root", type=Path, default=Path(".cache/embedded"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    world = ensure_embedded_world(args.root)
    manifest = json.loads((world.root / "world.json").read_text(encoding="utf-8"))
    print(f"embedded world v{manifest['version']} at {world.root}")
    print(f"  model:  {world.model_dir}")
    print(f"  train:  {world.train_csv}")
    print(f"  eval:   {world.eval_csv}")
    for key, value in manifest["stats"].items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
