"""A model's shape kept on disk, so that the sweeper plans its jobs without importing torch.

Counting a model's parameters builds it on the meta device, which imports torch and transformers' modeling
code: about 5 s of CPU in every sweeper process, for a number that only changes with the model's config.json.
The shape is kept under the user's cache (`$XDG_CACHE_HOME/sftsweep/model-shapes`, else
`~/.cache/sftsweep/model-shapes`), one JSON file per key. The key is the sha256 of everything the shape is
computed from: config.json's bytes, the LoRA settings, trust_remote_code, the model's name, the installed
transformers and accelerate, and the source of the module that computes it (trainers/job/plan.py), so that a
change to any of them computes the shape afresh. A cache that cannot be read or written is passed over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from trainers.runtime.run_dir import atomic_write_json

SHAPE_CACHE_DIR = "model-shapes"
_COMPUTED_BY = ("transformers", "accelerate")  # the packages whose code counts the parameters
T = TypeVar("T")


def cache_root() -> Path:
    """The user's cache for sftsweep (XDG's rule, as pip and Hugging Face follow it)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sftsweep"


def shape_key(config_json: bytes, settings: dict, computed_in: Path) -> str:
    """sha256 of config.json's bytes, the job's settings that change the shape, the installed versions of the
    packages that compute it and the source of the module `computed_in` that does."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(hashlib.sha256(config_json).digest())
    digest.update(_computed_by(computed_in))
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _computed_by(computed_in: Path) -> bytes:
    """sha256 of the installed versions of the packages that count and of the counting module's source: fixed for
    the process, read once (the plan asks for a job's shape several times per grid point)."""
    versions = json.dumps({name: _version(name) for name in _COMPUTED_BY}, sort_keys=True).encode()
    return hashlib.sha256(versions + hashlib.sha256(computed_in.read_bytes()).digest()).digest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_shape(key: str, kind: type[T]) -> T | None:
    """The cached shape of `key` as a `kind` dataclass, or None where none is kept (or it no longer fits)."""
    path = cache_root() / SHAPE_CACHE_DIR / f"{key}.json"
    try:
        return kind(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_shape(key: str, shape: object) -> None:
    """Keep `shape` (a dataclass) under `key`; a cache that cannot be written (a read-only HOME) is passed over."""
    try:
        atomic_write_json(cache_root() / SHAPE_CACHE_DIR / f"{key}.json", dataclasses.asdict(shape))
    except OSError:
        pass
