"""The world's content hash, and the shipped world 0: the same bytes on every machine.

Pretraining on CPU gives different weights on different CPUs (torch's kernel level, ATEN_CPU_CAPABILITY
avx512 / avx2 / default, gives three different `model.safetensors`; ARM and other torch versions use
other kernels again), so a world built locally depends on the machine that built it. The default world 0
is therefore built once and shipped in the repo (`trainers/world/artifact/world0/`, ~3 MB), checked
file by file against its `SHA256SUMS` and as a whole against `WORLD0_SHA256` below before it is used.

A world's hash is the sha256 of its `SHA256SUMS` text: one ``<sha256>  <path>`` line per content file
(the model directory and the two CSVs, sorted by path; `world.json` holds build timings and is left
out), the format `sha256sum -c SHA256SUMS` checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifact" / "world0"
SUMS_FILE = "SHA256SUMS"
WORLD0_SHA256 = "90cc43ffe6894d38188cb61d58d13f72846635d39ae44a8d1522974694bc7642"
"""The shipped world 0's hash; rebuilding the artifact (docs/data.md) prints the new value to pin here."""

_NOT_CONTENT = {"world.json", SUMS_FILE}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_files(root: Path) -> list[str]:
    """The world's content files, relative POSIX paths in sorted order (what its hash covers)."""
    files = [p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()]
    return sorted(f for f in files if f not in _NOT_CONTENT and not f.startswith("."))


def sums_text(root: Path) -> str:
    """The `SHA256SUMS` text of the world at `root`, computed from its files."""
    return "".join(f"{_file_sha256(Path(root) / f)}  {f}\n" for f in content_files(root))


def world_sha256(root: Path) -> str | None:
    """One sha256 identifying a built world's content (None when `root` holds no built world or is unreadable:
    it is recorded in result.json, also for a job that failed before its world existed)."""
    root = Path(root)
    try:
        if not (root / "world.json").is_file():
            return None
        return hashlib.sha256(sums_text(root).encode("utf-8")).hexdigest()
    except OSError:
        return None


def write_sums(root: Path) -> str:
    """Write `root/SHA256SUMS` and return the world's hash (after a build, and to refresh the artifact)."""
    text = sums_text(root)
    (Path(root) / SUMS_FILE).write_text(text, encoding="utf-8", newline="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_artifact(root: Path = ARTIFACT_DIR, expected: str = WORLD0_SHA256) -> None:
    """Refuse a shipped world whose bytes are not the ones recorded, naming the first file that differs."""
    fix = f"restore it: git checkout -- {_shown(root)}"
    try:
        recorded = (Path(root) / SUMS_FILE).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"embedded world artifact {_shown(root)}: cannot read {SUMS_FILE} ({e.strerror}); "
                         f"{fix}") from None
    listed = {}
    for line in recorded.splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    actual = set(content_files(root))
    for name in sorted(actual | set(listed)):
        path = Path(root) / name
        have = _file_sha256(path) if name in actual else "missing"
        if have != listed.get(name, "unlisted"):
            raise ValueError(f"embedded world artifact {_shown(path)}: sha256 {have[:12]}, "
                             f"{SUMS_FILE} says {listed.get(name, 'unlisted')[:12]} (corrupt or edited); {fix}")
    whole = hashlib.sha256(recorded.encode("utf-8")).hexdigest()
    if whole != expected:
        raise ValueError(f"embedded world artifact {_shown(root)}: world sha256 {whole[:12]} is not the pinned "
                         f"WORLD0_SHA256 {expected[:12]} (trainers/world/artifact.py); {fix}")


def _shown(path: Path) -> str:
    """`path` relative to the repo root when it is inside it (a pasteable git path), else absolute."""
    try:
        return Path(path).resolve().relative_to(Path(__file__).resolve().parents[2]).as_posix()
    except ValueError:
        return str(path)
