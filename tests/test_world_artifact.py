"""The shipped world 0 and the world's hash: the artifact is verified before use and refuses corrupt bytes,
world 0 is installed from it (never rebuilt on this CPU), and the hash is recorded in result.json."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from trainers.job.config import compose_job
from trainers.job.result import job_identity
from trainers.world.artifact import ARTIFACT_DIR, WORLD0_SHA256, verify_artifact, world_sha256, write_sums
from trainers.world.build import ensure_embedded_world


def sha256sum_hash(root: Path) -> str:
    """The world's hash as coreutils computes it: sha256 of `sha256sum`'s lines over the content files."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.name not in ("world.json", "SHA256SUMS"))
    out = subprocess.run(["sha256sum", *files], cwd=root, check=True, capture_output=True, text=True).stdout
    return hashlib.sha256(out.encode()).hexdigest()


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ARTIFACT_DIR, tmp_path / "world0"))


def test_shipped_world_matches_its_sums_and_the_pinned_hash() -> None:
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=ARTIFACT_DIR, check=True)
    assert sha256sum_hash(ARTIFACT_DIR) == WORLD0_SHA256
    verify_artifact()


def test_corrupt_weights_are_refused_naming_the_file(artifact_copy: Path) -> None:
    weights = artifact_copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model/model\.safetensors: sha256 \w+, SHA256SUMS says") as err:
        verify_artifact(artifact_copy, WORLD0_SHA256)
    assert "\n" not in str(err.value) and "git checkout -- " in str(err.value)


def test_sums_rewritten_to_match_other_bytes_are_refused_by_the_pinned_hash(artifact_copy: Path) -> None:
    """A rebuilt world whose SHA256SUMS was rewritten but whose hash was not pinned is not world 0."""
    (artifact_copy / "eval.csv").write_bytes(b"id,question\n")
    write_sums(artifact_copy)
    with pytest.raises(ValueError, match="is not the pinned WORLD0_SHA256"):
        verify_artifact(artifact_copy, WORLD0_SHA256)


def test_world0_is_installed_from_the_artifact_and_a_different_cached_world0_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "embedded-world0"
    world = ensure_embedded_world(root)
    for f in ("train.csv", "eval.csv", "model/model.safetensors", "model/tokenizer.json"):
        assert (root / f).read_bytes() == (ARTIFACT_DIR / f).read_bytes()
    assert world_sha256(world.root) == WORLD0_SHA256
    # a world 0 built on another CPU (same manifest, other weights) is not reused
    weights = root / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    ensure_embedded_world(root)
    assert weights.read_bytes() == (ARTIFACT_DIR / "model" / "model.safetensors").read_bytes()


def test_a_corrupt_artifact_stops_the_install_before_anything_is_written(
    artifact_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (artifact_copy / "train.csv").write_text("truncated")
    monkeypatch.setattr("trainers.world.build.ARTIFACT_DIR", artifact_copy)
    with pytest.raises(ValueError, match=r"train\.csv: sha256"):
        ensure_embedded_world(tmp_path / "cache" / "embedded-world0")
    assert not (tmp_path / "cache").exists()


def test_result_json_records_the_world_hash() -> None:
    cfg = compose_job([f"paths.embedded_dir={ARTIFACT_DIR}"])
    assert job_identity(cfg)["world_sha256"] == sha256sum_hash(ARTIFACT_DIR)
    assert job_identity(compose_job(["data=fineval"]))["world_sha256"] is None  # not the embedded world
