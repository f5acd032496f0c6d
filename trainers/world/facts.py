"""The synthetic knowledge world of the embedded default: entities, their facts, and its multiple-choice data.

Every attribute has exactly four values, always listed as options A-D in the same order, so the gold
letter is a fixed function of the value (shuffled options were not learnable at this scale). Names are
one word each and collide with no other word, so a WordLevel tokenizer gives each name one token.
`train.csv` asks about some entities, `eval.csv` about the others (held out: facts the base model saw
only in pretraining); answers are a letter and 0-3 restatements of the fact, so answer lengths vary and
MinorSFT and SFT-using-DPO differ. Everything here is a function of `WorldConfig.seed`.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainers.data.mcq import OPTION_LETTERS

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
    # 900 steps: fact recall 0.9997, base accuracy 0.328 (the shipped world 0; builds on other CPUs gave
    # 0.269-0.276), 116 s on 2 idle cores (1600 steps: recall 1.000, base 0.241, 193 s)
    pretrain_steps: int = 900
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0  # 0.1 made the downstream learning-rate curve flat and noisy
    threads: int = 2  # ~0.075 s/step on 2 idle cores; on an oversubscribed box 1 thread is 5-9x faster
    log_every: int = 100


@dataclass(frozen=True)
class Facts:
    """The sampled world: names, the attributes in use, and each entity's value index per attribute."""

    names: tuple[str, ...]
    attributes: tuple[tuple[str, tuple[str, str, str, str]], ...]
    values: tuple[tuple[int, ...], ...]  # values[entity][attribute] in 0..3 (== index of the gold letter)
    train_entities: tuple[int, ...]
    eval_entities: tuple[int, ...]


def make_names(rng: random.Random, n: int, reserved: set[str]) -> list[str]:
    """n distinct capitalised CVCV names that collide with no other word, so each is its own token."""
    pool = [c1 + v1 + c2 + v2 for c1 in _CONSONANTS for v1 in _VOWELS for c2 in _CONSONANTS for v2 in _VOWELS]
    pool = [p.capitalize() for p in pool if p.capitalize() not in reserved and p not in reserved]
    if n > len(pool):
        raise ValueError(f"n_entities={n} exceeds the {len(pool)} available names")
    return rng.sample(pool, n)


def template_words() -> set[str]:
    """Every non-name word of the templates and attributes (names must avoid them)."""
    words = set(LETTERS) | {"Question", ":", "."}
    for attr, values in ATTRIBUTES:
        words.add(attr)
        words.update(values)
    texts = (LISTING_TEMPLATE, *FACT_TEMPLATES, *RESTATEMENTS)
    for text in texts:
        words.update(w for w in text.split() if not w.startswith("{"))
    return words


def make_facts(config: WorldConfig) -> Facts:
    """Sample names, facts and the train/held-out entity split from the seed alone."""
    if not 0 < config.n_attributes <= len(ATTRIBUTES):
        raise ValueError(f"n_attributes must be in 1..{len(ATTRIBUTES)}")
    if not 0 < config.n_train_entities < config.n_entities:
        raise ValueError("need 0 < n_train_entities < n_entities")
    if not 0 <= config.max_restatements <= len(RESTATEMENTS):
        raise ValueError(f"max_restatements must be in 0..{len(RESTATEMENTS)}")
    rng = random.Random(config.seed)
    names = make_names(rng, config.n_entities, template_words())
    attributes = ATTRIBUTES[: config.n_attributes]
    values = tuple(tuple(rng.randrange(4) for _ in attributes) for _ in names)
    order = list(range(config.n_entities))
    rng.shuffle(order)
    train = tuple(sorted(order[: config.n_train_entities]))
    held_out = tuple(sorted(order[config.n_train_entities :]))
    return Facts(tuple(names), attributes, values, train, held_out)


def fact_fields(facts: Facts, entity: int, attribute: int) -> dict[str, str]:
    attr, options = facts.attributes[attribute]
    return {"name": facts.names[entity], "attr": attr, "value": options[facts.values[entity][attribute]]}


def pretraining_sentences(facts: Facts, config: WorldConfig) -> list[str]:
    """Declarative facts about every entity plus letter-labelled option listings; no question -> letter."""
    sentences = [
        template.format(**fact_fields(facts, e, a))
        for e in range(len(facts.names))
        for a in range(len(facts.attributes))
        for template in FACT_TEMPLATES
    ]
    for attr, options in facts.attributes:
        listing = LISTING_TEMPLATE.format(attr=attr, **{f"v{i}": v for i, v in enumerate(options)})
        sentences.extend([listing] * config.listing_repeats)
    return sentences


def mc_rows(
    facts: Facts, entities: Sequence[int], n: int, max_restatements: int, rng: random.Random, prefix: str
) -> list[dict]:
    """n multiple-choice rows, each a distinct (entity, attribute, question template) of the given entities."""
    pool = [(e, a, q) for e in entities for a in range(len(facts.attributes)) for q in range(len(QUESTION_TEMPLATES))]
    if n > len(pool):
        raise ValueError(f"asked for {n} {prefix} questions but only {len(pool)} facts exist")
    rows = []
    for i, (e, a, q) in enumerate(rng.sample(pool, n)):
        fields = fact_fields(facts, e, a)
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


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def mc_prompt(row: dict) -> str:
    """The pipeline's prompt rendering (used here only to check the vocabulary covers it)."""
    return PROMPT_TEMPLATE.format(**row)


def mc_answer(row: dict) -> str:
    return f"{row['answer']} . {row['explanation']}" if row["explanation"] else row["answer"]
