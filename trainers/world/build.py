"""The embedded default, built once and cached: the world (`facts`), its base model (`pretrain`), on disk.

On a machine with no model hub, ``make sweep`` still needs a base model that *knows* facts it was never
fine-tuned on, and multiple-choice data in the real datasets' CSV shape (docs/data.md). The build is
deterministic from `WorldConfig` on one machine, but its pretrained weights depend on the CPU's kernels
(`artifact`), so the default world 0 is shipped and copied, not built. The directory loads like any checkpoint:

    <root>/model/       config.json, safetensors weights, tokenizer (AutoTokenizer / AutoModelForCausalLM)
    <root>/train.csv    multiple-choice questions about the training entities
    <root>/eval.csv     questions about the held-out entities
    <root>/world.json   version, config and build stats (fact recall, base accuracy)
    <root>/SHA256SUMS   sha256 of every content file; the world's hash is this file's sha256

``ensure_embedded_world(root)`` returns the cached world, or installs (world 0) or builds it under a file
lock into a temporary sibling directory that is renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from trainers.runtime.run_dir import apply_umask, current_umask
from trainers.world.artifact import ARTIFACT_DIR, WORLD0_SHA256, verify_artifact, world_sha256, write_sums
from trainers.world.facts import (
    WorldConfig,
    make_facts,
    mc_answer,
    mc_prompt,
    mc_rows,
    pretraining_sentences,
    write_csv,
)
from trainers.world.pretrain import (
    build_corpus,
    build_model,
    build_tokenizer,
    encode_many,
    fact_recall,
    mc_scores,
    model_config,
    pretrain,
)

logger = logging.getLogger(__name__)

DEFAULT_WORLD = WorldConfig()  # the real embedded world; tests pass smaller ones
WORLD_DIR = "embedded-world{seed}"
"""Each world seed's cache directory under the cache dir (conf/paths/default.yaml spells the same name)."""

# Bump when the world's content or the build procedure changes: a cached world of another version is rebuilt.
WORLD_VERSION = 2


@dataclass(frozen=True)
class EmbeddedWorld:
    """Paths of a built world; ``model_dir`` loads with AutoTokenizer / AutoModelForCausalLM."""

    root: Path
    model_dir: Path
    train_csv: Path
    eval_csv: Path


def world_dir(cache_dir: Path, seed: int) -> Path:
    """Where the embedded world of `seed` is cached: one directory per seed, so worlds never rebuild each other."""
    return Path(cache_dir) / WORLD_DIR.format(seed=seed)


def seeded_world(seed: int) -> WorldConfig:
    """The real embedded world built from another seed: same sizes, other entities, facts and questions."""
    return dataclasses.replace(DEFAULT_WORLD, seed=seed)


# ------------------------------------------------------------------------------------------- build


def embedded_model_config(root: Path, config: WorldConfig = DEFAULT_WORLD):
    """The base model's config without building anything: the built world's config.json when there is one,
    else the config `ensure_embedded_world(root, config)` would build (facts and tokenizer only, no training)."""
    from transformers import AutoConfig

    built = world_paths(root).model_dir / "config.json"
    if built.is_file():
        return AutoConfig.from_pretrained(built.parent)
    return model_config(config, build_tokenizer(make_facts(config)))


def world_paths(root: Path) -> EmbeddedWorld:
    return EmbeddedWorld(root=root, model_dir=root / "model", train_csv=root / "train.csv", eval_csv=root / "eval.csv")


def manifest_matches(root: Path, config: WorldConfig) -> bool:
    """A world is reusable only if complete and built by this version from this exact config."""
    try:
        manifest = json.loads((root / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    paths = world_paths(root)
    files = (paths.train_csv, paths.eval_csv, paths.model_dir / "config.json", paths.model_dir / "tokenizer.json")
    same = manifest.get("version") == WORLD_VERSION and manifest.get("config") == dataclasses.asdict(config)
    return same and all(f.is_file() for f in files)


def _build(out: Path, config: WorldConfig) -> dict:
    """Build the whole world into ``out``; returns the build stats."""
    t0 = time.monotonic()
    logger.info("embedded world: sampling %d entities x %d attributes", config.n_entities, config.n_attributes)
    facts = make_facts(config)
    rng = random.Random(config.seed + 2)
    train_rows = mc_rows(facts, facts.train_entities, config.n_train_questions, config.max_restatements, rng, "train")
    eval_rows = mc_rows(facts, facts.eval_entities, config.n_eval_questions, config.max_restatements, rng, "eval")

    logger.info("embedded world: building the tokenizer")
    tokenizer = build_tokenizer(facts)
    rows = train_rows + eval_rows  # the pipeline must never meet an unknown word
    encode_many(tokenizer, [mc_prompt(r) for r in rows] + [mc_answer(r) for r in rows])
    sentences = pretraining_sentences(facts, config)
    corpus = build_corpus(facts, tokenizer, sentences)

    model = build_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "embedded world: pretraining %d params on %d sentences, %d steps of %dx%d tokens",
        n_params,
        len(sentences),
        config.pretrain_steps,
        config.batch_size,
        config.seq_len,
    )
    loss = pretrain(model, corpus, config)

    logger.info("embedded world: measuring fact recall and base accuracy")
    recall = fact_recall(model, tokenizer, facts)
    base_accuracy, gold_letter_logprob = mc_scores(model, tokenizer, eval_rows)

    logger.info("embedded world: writing %s", out)
    write_csv(out / "train.csv", train_rows)
    write_csv(out / "eval.csv", eval_rows)
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    apply_umask(out / "model")  # a shared cache: readable by the team where the umask allows
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


def _reusable(root: Path, config: WorldConfig) -> bool:
    """A complete world of this version and config; for the shipped world 0, also its exact bytes."""
    if not manifest_matches(root, config):
        return False
    if config != DEFAULT_WORLD:
        return True
    have = world_sha256(root)
    if have != WORLD0_SHA256:
        logger.warning("embedded world: %s is not the shipped world 0 (sha256 %s); replacing it", root, have)
        return False
    return True


def ensure_embedded_world(root: Path, config: WorldConfig = DEFAULT_WORLD) -> EmbeddedWorld:
    """Return the world at ``root``, making it first unless a complete one of this version/config is there:
    the default world 0 is copied from the shipped artifact (checked by sha256: the same bytes on every
    machine), any other world is built from its config (`build_world`).

    Safe for concurrent callers: one builds under a file lock while the others wait, then reuse it.
    """
    root = Path(root).resolve()
    if _reusable(root, config):
        return world_paths(root)
    if config == DEFAULT_WORLD:
        verify_artifact(ARTIFACT_DIR, WORLD0_SHA256)  # a corrupt checkout is refused before anything is written
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _reusable(root, config):  # made by another process while we waited
            return world_paths(root)
        if config == DEFAULT_WORLD:
            logger.info("embedded world: installing the shipped world 0 (sha256 %s) into %s", WORLD0_SHA256, root)
            _install(root, lambda tmp: shutil.copytree(ARTIFACT_DIR, tmp, dirs_exist_ok=True))
        else:
            _install(root, lambda tmp: _build_into(tmp, config))
    return world_paths(root)


def build_world(root: Path, config: WorldConfig = DEFAULT_WORLD) -> str:
    """Build the world of `config` from code into ``root`` (replacing what is there); returns its sha256.
    How the shipped artifact is made (docs/data.md); the bytes depend on the CPU and torch that build it."""
    root = Path(root).resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        _install(root, lambda tmp: _build_into(tmp, config))
    return world_sha256(root)


def _build_into(out: Path, config: WorldConfig) -> None:
    """Build the world into ``out`` under a fixed thread count, with its manifest and SHA256SUMS."""
    logger.info("embedded world: building into %s (version %d)", out, WORLD_VERSION)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # fixed thread count: speed on 2 cores, reproducible weights
    try:
        stats = _build(out, config)
    finally:
        torch.set_num_threads(threads)
    manifest = {"version": WORLD_VERSION, "config": dataclasses.asdict(config), "stats": stats}
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_sums(out)
    logger.info("embedded world: done in %.1fs, fact recall %.3f", stats["build_seconds"], stats["fact_recall"])


def _install(root: Path, make) -> None:
    """Make a world in a temporary sibling of ``root`` and rename it into place only when complete.
    Only called while holding the lock."""
    _remove_leftovers(root)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the world is a shared cache
    try:
        make(tmp)
        _replace_dir(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Install (world 0, shipped), build or reuse an embedded world.")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed (data.world_seed; 0: the default)")
    parser.add_argument("--root", type=Path, default=None, help=f"default: .cache/{WORLD_DIR}")
    parser.add_argument("--build", action="store_true",
                        help="build from code even for world 0 (how the shipped artifact is made, docs/data.md)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed={args.seed}: a world seed is an integer >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    root = args.root or world_dir(Path(".cache"), args.seed)
    if args.build:
        build_world(root, seeded_world(args.seed))
        world = world_paths(Path(root).resolve())
    else:
        world = ensure_embedded_world(root, seeded_world(args.seed))
    manifest = json.loads((world.root / "world.json").read_text(encoding="utf-8"))
    print(f"embedded world v{manifest['version']} at {world.root}")
    print(f"  sha256: {world_sha256(world.root)}")
    print(f"  model:  {world.model_dir}")
    print(f"  train:  {world.train_csv}")
    print(f"  eval:   {world.eval_csv}")
    for key, value in manifest["stats"].items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
