"""The embedded world must be a drop-in for a real checkpoint plus real MC datasets, built once and reproducibly."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainers.world.build import WORLD_VERSION, EmbeddedWorld, ensure_embedded_world
from trainers.world.facts import CSV_COLUMNS, WorldConfig

# Small enough to build in a few seconds; every code path of the real build still runs.
SMALL = WorldConfig(
    n_entities=24,
    n_train_entities=12,
    n_attributes=4,
    n_train_questions=40,
    n_eval_questions=30,
    pretrain_steps=12,
    batch_size=8,
    log_every=5,
    threads=1,  # CI boxes are small and shared; the real world uses 2
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _prompt(row: dict[str, str]) -> str:
    """The pipeline's prompt, restated here independently of the module under test."""
    return f"Question : A . {row['A']} B . {row['B']} C . {row['C']} D . {row['D']} . {row['question']}"


def _answer(row: dict[str, str]) -> str:
    return f"{row['answer']} . {row['explanation']}" if row["explanation"] else row["answer"]


def _entity(question: str) -> str:
    """Names are the only capitalised words of a question besides a leading "The"."""
    (name,) = [w for w in question.split() if w[0].isupper() and w != "The"]
    return name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedWorld:
    return ensure_embedded_world(tmp_path_factory.mktemp("w") / "embedded", SMALL)


def test_csvs_have_the_real_datasets_shape(world: EmbeddedWorld) -> None:
    for path, n in ((world.train_csv, SMALL.n_train_questions), (world.eval_csv, SMALL.n_eval_questions)):
        with path.open(encoding="utf-8", newline="") as f:
            assert tuple(next(csv.reader(f))) == CSV_COLUMNS
        rows = _rows(path)
        assert len(rows) == n
        assert len({r["id"] for r in rows}) == n
        assert {r["answer"] for r in rows} <= set("ABCD")
        assert all(r[r["answer"]] for r in rows)  # the gold letter names a real option


def test_answers_vary_in_length(world: EmbeddedWorld) -> None:
    """Single-length answers make minor_sft and dpo_sft coincide: Adam cancels a constant loss scale."""
    lengths = {len(_answer(r).split()) for r in _rows(world.train_csv)}
    assert len(lengths) >= 3 and min(lengths) == 1


def test_train_and_eval_entities_are_disjoint(world: EmbeddedWorld) -> None:
    train = {_entity(r["question"]) for r in _rows(world.train_csv)}
    held_out = {_entity(r["question"]) for r in _rows(world.eval_csv)}
    assert train and held_out and not train & held_out


def test_checkpoint_loads_like_a_real_one_and_covers_every_word(world: EmbeddedWorld) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (world.model_dir / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.chat_template is None
    assert all(len(tokenizer(x, add_special_tokens=False)["input_ids"]) == 1 for x in "ABCD")
    rows = _rows(world.train_csv) + _rows(world.eval_csv)
    texts = [_prompt(r) for r in rows] + [_answer(r) for r in rows]
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        assert tokenizer.unk_token_id not in ids
    ids = torch.tensor([tokenizer(texts[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_manifest_records_version_config_and_stats(world: EmbeddedWorld) -> None:
    manifest = json.loads((world.root / "world.json").read_text(encoding="utf-8"))
    assert manifest["version"] == WORLD_VERSION
    assert manifest["config"]["n_entities"] == SMALL.n_entities
    stats = manifest["stats"]
    # the recorded stats describe the saved checkpoint: scored here independently of the module, they agree
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.world.facts import make_facts
    from trainers.world.pretrain import fact_recall

    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir).eval()
    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    correct, gold_logprobs = [], []
    for row in _rows(world.eval_csv):  # the prompt, then the next token: the letter ranked among A-D
        ids = tokenizer(_prompt(row), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        gold = "ABCD".index(row["answer"])
        correct.append(int(logprobs[letters].argmax()) == gold)
        gold_logprobs.append(logprobs[letters[gold]].item())
    assert len(correct) == SMALL.n_eval_questions
    assert stats["base_eval_accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert stats["base_gold_letter_logprob"] == pytest.approx(sum(gold_logprobs) / len(gold_logprobs), abs=1e-4)
    assert stats["fact_recall"] == pytest.approx(fact_recall(model, tokenizer, make_facts(SMALL)))
    # by hand: a Llama of hidden 128, MLP 512, 2 layers, 4 heads = 4 kv heads, no biases, tied embedding
    layer = 4 * 128 * 128 + 3 * 128 * 512 + 2 * 128
    assert stats["n_params"] == len(tokenizer) * 128 + 2 * layer + 128


def test_second_call_reuses_the_world(world: EmbeddedWorld) -> None:
    before = (world.root / "world.json").stat().st_mtime_ns
    assert ensure_embedded_world(world.root, SMALL) == world
    assert (world.root / "world.json").stat().st_mtime_ns == before


def test_rebuild_elsewhere_is_byte_identical(world: EmbeddedWorld, tmp_path: Path) -> None:
    other = ensure_embedded_world(tmp_path / "again", SMALL)
    assert other.train_csv.read_bytes() == world.train_csv.read_bytes()
    assert other.eval_csv.read_bytes() == world.eval_csv.read_bytes()
    for name in ("tokenizer.json", "model.safetensors"):  # same machine and threads: same weights
        assert (other.model_dir / name).read_bytes() == (world.model_dir / name).read_bytes()


def test_changed_config_rebuilds_in_place(world: EmbeddedWorld, tmp_path: Path) -> None:
    """A stale world (other config) is replaced whole; no temporary directory survives, even a killed build's."""
    root = tmp_path / "embedded"
    shutil.copytree(world.root, root)
    (tmp_path / ".embedded.tmp-killed").mkdir()  # what a build killed mid-way leaves behind
    changed = dataclasses.replace(SMALL, seed=1)
    ensure_embedded_world(root, changed)
    manifest = json.loads((root / "world.json").read_text(encoding="utf-8"))
    assert manifest["config"]["seed"] == 1
    assert (root / "train.csv").read_bytes() != world.train_csv.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["embedded"]


def test_concurrent_callers_build_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two callers at once (as two sweep workers would be): one builds under the lock, the other reuses."""
    root = tmp_path / "embedded"
    caplog.set_level(logging.INFO, logger="trainers.world")
    with ThreadPoolExecutor(max_workers=2) as pool:
        worlds = list(pool.map(lambda _: ensure_embedded_world(root, SMALL), range(2)))
    assert worlds[0] == worlds[1]
    assert sum("building into" in r.getMessage() for r in caplog.records) == 1


def test_each_world_seed_has_its_own_cache_directory_and_facts() -> None:
    """data.world_seed picks the world: the model and data paths follow it to a directory of its own (so two
    worlds never rebuild each other's cache), and another seed is another world of the same size."""
    from trainers.job.config import compose_job
    from trainers.world.build import DEFAULT_WORLD, seeded_world, world_dir
    from trainers.world.facts import make_facts

    for seed in (0, 1):
        cfg = compose_job([f"data.world_seed={seed}"])
        root = world_dir(Path(cfg.paths.cache_dir), seed)
        assert (Path(cfg.paths.embedded_dir), Path(cfg.data.path), Path(cfg.model.path)) == (root, root, root / "model")
    assert compose_job([]).data.world_seed == 0  # the default is the world as it always was
    assert seeded_world(2) == dataclasses.replace(DEFAULT_WORLD, seed=2)
    first, other = (make_facts(dataclasses.replace(SMALL, seed=s)) for s in (0, 1))
    assert len(first.train_entities) == len(other.train_entities) and first != other
