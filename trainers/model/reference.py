"""Reference log-probs and base-model scores: computed once per key, shared by every job.

The key covers everything that changes the numbers (docs/architecture.md): the model's files (weights,
config, tokenizer), the dtype and attention kernel, and the exact token ids of every sample,
which in turn cover the data, its sampling, the prompt template and the max length. A changed
model or dataset therefore can never reuse a stale cache. Entries are written atomically under
a file lock, so two jobs that start together compute an entry once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save

from trainers.data.prompts import Sample
from trainers.model.scoring import Scores
from trainers.runtime.run_dir import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

_CHUNK = 1 << 24


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(paths: Sequence[Path], memo_path: Path) -> list[str]:
    """sha256 of each file's content, in the order given.

    Hashing 15 GB of 7B weights takes minutes, so each file's hash is remembered in `memo_path`
    under its (path, size, mtime): a file is hashed once per machine, not once per job.
    """
    memo: dict[str, str] = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    digests, changed = [], False
    for path in paths:
        stat = path.stat()
        memo_key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if memo_key not in memo:
            memo[memo_key] = _sha256_file(path)
            changed = True
        digests.append(memo[memo_key])
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return digests


def named_digest(named: Sequence[tuple[str, str]]) -> str:
    """One hash of (name, content hash) pairs: a set of files known by their names and contents, not paths."""
    return hashlib.sha256("\n".join(f"{name}:{digest}" for name, digest in named).encode()).hexdigest()


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The files of a checkpoint directory (hidden ones excluded), sorted."""
    return sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))


def model_fingerprint(model_dir: Path, memo_path: Path) -> str:
    """Hash of every file of a checkpoint directory (weights, config and tokenizer files), by name and content;
    each file's hash is memoised (`file_digests`)."""
    files = checkpoint_files(model_dir)
    return named_digest([(p.name, d) for p, d in zip(files, file_digests(files, memo_path), strict=True)])


TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
"""Files every tokenizer class reads besides its own `vocab_files_names` (vocab, merges, tokenizer.json …)."""


def tokenizer_fingerprint(model_dir: Path, vocab_files: Sequence[str], memo_path: Path) -> str:
    """Hash of the tokenizer's files in the checkpoint directory: its class's vocabulary files plus
    TOKENIZER_FILES, those present, by name and content (memoised like `model_fingerprint`)."""
    names = set(vocab_files) | set(TOKENIZER_FILES)
    files = [p for p in checkpoint_files(model_dir) if p.name in names]
    return named_digest([(p.name, d) for p, d in zip(files, file_digests(files, memo_path), strict=True)])


def samples_digest(samples: Sequence[Sample]) -> str:
    """Hash of the exact token ids, prompt lengths and gold letters of a set of samples."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps([s.id, s.prompt_len, s.gold, s.input_ids]).encode())
    return digest.hexdigest()


def scores_key(kind: str, fingerprint: str, dtype: str, attn_implementation: str, samples: Sequence[Sample]) -> str:
    """Cache key of one scoring pass (kind: "reference" over train samples, "base_eval" over eval)."""
    payload = json.dumps(
        {"kind": kind, "model": fingerprint, "dtype": dtype, "attn": attn_implementation,
         "samples": samples_digest(samples), "n": len(samples)},
        sort_keys=True,
    )
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def cached_scores(cache_dir: Path, key: str, compute: Callable[[], Scores]) -> tuple[Scores, bool]:
    """Scores for `key`, computing them only when no job has yet; returns (scores, computed)."""
    path = Path(cache_dir) / f"{key}.safetensors"
    if (cached := _load(path)) is not None:
        return cached, False
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if (cached := _load(path)) is not None:
            return cached, False
        log.info("Computing %s (cached at %s)", key.split("-")[0], path)
        scores = compute()
        tensors = {"logps": scores.logps.contiguous(), "preds": scores.preds.contiguous()}
        if scores.token_logps is not None:
            tensors["token_logps"] = scores.token_logps.contiguous()
        atomic_write_bytes(path, save(tensors))
    return scores, True


def load_scores(cache_dir: Path, key: str) -> Scores | None:
    """The cached scores for `key`, or None when no job has computed them yet."""
    return _load(Path(cache_dir) / f"{key}.safetensors")


def _load(path: Path) -> Scores | None:
    """The cached scores, or None if absent or written before per-token log-probs were kept (recomputed once)."""
    if not path.exists():
        return None
    tensors = load_file(str(path))
    if "token_logps" not in tensors:
        return None
    return Scores(logps=tensors["logps"].to(torch.float32), preds=tensors["preds"].to(torch.long),
                  token_logps=tensors["token_logps"].to(torch.float32))

