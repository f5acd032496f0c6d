"""Bad input: a one-line error naming the field and the fix, before any training step."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.data.mcq import DataError
from trainers.recipe import run_job
from trainers.runtime.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "error", "names"),
    [
        (["method.name=lora_magic"], ConfigError, "method="),
        (["method=minor_sft", "method.beta=0"], ConfigError, "method.beta=0"),
        (["method=dpo_sft", "method.beta=-0.5"], ConfigError, "method.beta=-0.5"),
        (["method=minor_sft", "method.beta=null"], ConfigError, "method.beta=None"),
        (["method=kl_sft", "method.beta=-0.1"], ConfigError, "method.beta=-0.1"),
        (["train.lr=0"], ConfigError, "train.lr=0"),
        (["data.world_seed=-1"], ConfigError, "data.world_seed=-1"),
        (["data.world_seed=one"], ConfigError, "data.world_seed=one"),
        (["train.lr=-1e-4"], ConfigError, "train.lr=-0.0001"),
        (["train.save_model=fp8"], ConfigError, "train.save_model=fp8"),
        (["train.checkpoint_every_min=-5"], ConfigError, "train.checkpoint_every_min=-5"),
        (["train.ddp_timeout=0"], ConfigError, "train.ddp_timeout=0"),
        (["train.report_steps=-5"], ConfigError, "train.report_steps=-5"),
        (["train.report_steps=2.5"], ConfigError, "train.report_steps=2.5"),
        (["train.global_batch_size=10", "train.per_device_batch_size=4"], ConfigError, "train.global_batch_size=10"),
        (["model.path=/nonexistent/qwen2"], ConfigError, "model.path=/nonexistent/qwen2"),
        (["data.path=/nonexistent/fineval"], DataError, "/nonexistent/fineval"),
        (["data.train_split=nosuchsplit"], DataError, "nosuchsplit"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(job_cfg, overrides, error, names):
    cfg = job_cfg(*overrides)
    with pytest.raises(error) as info:
        run_job(cfg)
    message = str(info.value)
    assert "\n" not in message and names in message
    assert not (Path(cfg.run_dir) / "metrics.jsonl").exists()
    assert not (Path(cfg.run_dir) / "result.json").exists()


def _copy_world_data(world_root: Path, dest: Path, edit) -> Path:
    """The tiny world's data with one edit applied to its train rows."""
    dest.mkdir()
    for name in ("train.csv", "eval.csv"):
        with open(world_root / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        fields = list(rows[0])
        if name == "train.csv":
            fields, rows = edit(fields, rows)
        with open(dest / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return dest


def test_data_without_required_columns_is_rejected(job_cfg, tiny_world, tmp_path):
    data = _copy_world_data(tiny_world.root, tmp_path / "data", lambda f, r: ([c for c in f if c != "C"], r))
    with pytest.raises(DataError, match=r"lacks required columns C \(has: ") as info:
        run_job(job_cfg(f"data.path={data}"))
    (has,) = re.findall(r"\(has: ([^)]*)\)", str(info.value))
    assert "'D'" in has and "'C'" not in has  # the file's own columns, the missing one named once


def test_answers_outside_a_to_d_are_counted_not_trained(job_cfg, tiny_world, tmp_path, caplog):
    def break_answers(fields, rows):
        for row in rows[:5]:
            row["answer"] = "E"
        return fields, rows

    data = _copy_world_data(tiny_world.root, tmp_path / "data", break_answers)
    n_rows = sum(1 for _ in open(data / "train.csv")) - 1
    result = run_job(job_cfg(f"data.path={data}"))
    assert result["status"] == "ok" and result["train_n"] == n_rows - 5
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and re.search(r"\brejected 5 rows of ", rejected[0]), rejected
    assert result["data_warnings"] == rejected  # in result.json too: the report's notes name them


def test_all_answers_invalid_is_an_error(job_cfg, tiny_world, tmp_path):
    def break_answers(fields, rows):
        for row in rows:
            row["answer"] = "Z"
        return fields, rows

    data = _copy_world_data(tiny_world.root, tmp_path / "data", break_answers)
    with pytest.raises(DataError, match="A-D|A–D"):
        run_job(job_cfg(f"data.path={data}"))


def test_cli_exits_nonzero_with_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "trainers.train", "method=minor_sft", "method.beta=-1", "logger=none",
         f"paths.output_dir={tmp_path}"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: method.beta=-1 is invalid for minor_sft: β must be > 0 (e.g. method.beta=0.1)"
    ]
    assert not list(tmp_path.rglob("result.json"))


def test_kl_sft_accepts_lambda_zero(job_cfg):
    """λ = 0 is a legitimate kl_sft point (it is raw SFT); only a negative λ is refused."""
    from trainers.job.validate import validate_config

    validate_config(job_cfg("method=kl_sft", "method.beta=0"))
    with pytest.raises(ConfigError, match="λ must be >= 0"):
        validate_config(job_cfg("method=kl_sft", "method.beta=-1"))
