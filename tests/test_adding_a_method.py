"""A new method is two files, its loss function and its conf/method yaml (docs/losses.md): shown in a copy of
the checkout, through a sweep and the report; and a method file or a job that describes a method wrongly is
refused, naming the file or the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from trainers.job.config import compose_job
from trainers.job.validate import validate_config
from trainers.runtime.errors import ConfigError
from trainers.runtime.methods import METHODS, _read_methods
from trainers.runtime.run_dir import config_hash

# the two files: a loss nobody here wrote (half of raw SFT's, so its first logged loss is exactly half of SFT's
# at the same point) and its method file
HALF_SFT_MODULE = '''
import torch


def half_sft_loss(policy_logps, ref_logps, n_tokens, beta, tokens=None) -> torch.Tensor:
    """Half of raw SFT: -lp / (2 m); its gradient is SFT's halved."""
    return -policy_logps / (2.0 * n_tokens)
'''
HALF_SFT_YAML = """name: half_sft
beta: null
spec:
  display: Half SFT
  loss: throwaway_losses.half_sft_loss
"""
CODE = ("trainers", "sweep", "analysis", "hydra_plugins", "conf")


@pytest.mark.slow
def test_a_loss_added_as_its_function_and_its_yaml_runs_through_a_sweep_and_the_report(tiny_world, tmp_path):
    repo = tmp_path / "repo"
    for name in CODE:
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "throwaway_losses.py").write_text(HALF_SFT_MODULE)
    (repo / "conf" / "method" / "half_sft.yaml").write_text(HALF_SFT_YAML)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "model.embedded=false", f"paths.embedded_dir={tiny_world.root}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", "logger=none", "data.n_train=40",
            "data.n_eval=20", "train.num_threads=1", "train.max_steps=4", "train.logging_steps=1",
            "~grid.methods.dpo_sft", "~grid.methods.minor_sft", "grid.methods.sft.lr=[1e-3]",
            "+grid.methods.half_sft.lr=[1e-3]"]
    done = subprocess.run([sys.executable, "-m", "trainers.train", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[sweep] finished: 2 ok, 0 diverged, 0 failed, 0 missing of 2" in done.stdout
    first = {}
    for result in sweep.rglob("result.json"):
        if "_prepare" not in result.parts:
            method = json.loads(result.read_text())["method"]
            first[method] = json.loads((result.parent / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first) == {"sft", "half_sft"} and first["sft"]["step"] == first["half_sft"]["step"] == 1
    assert first["half_sft"]["loss"] == pytest.approx(first["sft"]["loss"] / 2, rel=1e-5)  # its function ran
    report = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep), "--no-wandb"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Half SFT" in (sweep / "report" / "report.html").read_text()


@pytest.mark.parametrize("text, named", [
    ("name: x\nbeta: null\n", "no spec: block"),
    ("name: x\nbeta: null\nspec: {display: X, loss: m.f, reads_refrence: true}\n", "unknown key(s) ['reads_refrence']"),
    ("name: x\nbeta: null\nspec: {display: X}\n", "lacks ['loss']"),
    ("name: y\nbeta: null\nspec: {display: X, loss: m.f}\n", "name: y must be the file's name, x"),
])
def test_a_method_file_that_describes_its_method_wrongly_is_refused_naming_the_file(tmp_path, text, named):
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ValueError) as err:
        _read_methods(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'x.yaml'}: ") and named in str(err.value)


def test_each_shipped_method_file_is_read_as_its_method():
    """By hand, from conf/method/*.yaml: the β methods are those whose file sets a β; kl_sft alone may take 0."""
    files = sorted(p.stem for p in (REPO_ROOT / "conf" / "method").glob("*.yaml"))
    assert sorted(METHODS) == files == ["dft", "dpo_sft", "kl_sft", "minor_sft", "sft"]
    assert {m for m, spec in METHODS.items() if spec.takes_beta} == {"dpo_sft", "kl_sft", "minor_sft"}
    assert [m for m, spec in METHODS.items() if spec.beta_may_be_zero] == ["kl_sft"]
    assert {m: spec.display for m, spec in METHODS.items()} == {
        "dft": "DFT", "dpo_sft": "SFT using DPO", "kl_sft": "KL-regularised SFT", "minor_sft": "MinorSFT",
        "sft": "SFT"}


def test_a_job_that_overrides_its_methods_spec_is_refused_in_one_line():
    """The spec is the method's description: a command line that changed it would run one method and record
    another."""
    validate_config(compose_job(["method=minor_sft"]))
    with pytest.raises(ConfigError) as err:
        validate_config(compose_job(["method=minor_sft", "method.spec.reads_reference=false"]))
    assert str(err.value).startswith("method.spec is not what conf/method/minor_sft.yaml says minor_sft is")
    assert "\n" not in str(err.value)


def test_a_methods_spec_is_not_in_the_config_hash():
    """What the method is follows from its name: the spec (a display name, here) never makes a run another
    experiment, while its β does."""
    base = config_hash(compose_job(["method=minor_sft"]))
    assert config_hash(compose_job(["method=minor_sft", "method.spec.display=Other"])) == base
    assert config_hash(compose_job(["method=minor_sft", "method.beta=0.2"])) != base
