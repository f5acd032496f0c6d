"""Overrides that every grid point would overwrite are refused before anything runs (sweep/overrides.py)."""

from __future__ import annotations

import shlex

import pytest
from omegaconf import OmegaConf
from test_sweep import run_sweep

from sweep.grid import expand_grid
from sweep.overrides import grid_override_error
from trainers.job.config import compose_job

GRID = {"seeds": [0], "methods": {"sft": {"lr": [1e-3]}, "minor_sft": {"lr": [1e-3], "beta": [0.1]}}}


@pytest.mark.parametrize(
    ("override", "instead"),
    [
        ("train.lr=2e-4", "grid.methods.sft.lr=[2e-4] / grid.methods.minor_sft.lr=[2e-4]"),
        ("method.beta=0.3", "grid.methods.minor_sft.beta=[0.3]"),
        ("seed=3", "grid.seeds=[3]"),
        ("++seed=3", "grid.seeds=[3]"),
    ],
)
def test_grid_coordinates_are_refused_naming_the_grid_field(override, instead):
    message = grid_override_error(["train.max_steps=3", override], GRID)
    assert message is not None and "\n" not in message
    assert message.startswith(f"{override}: ") and message.endswith(f"set {instead} instead")


@pytest.mark.parametrize(("method", "kept"), [("sft", {"sft": {"lr": [0.001, 0.01]}}),
                                             ("minor_sft", {"minor_sft": {"lr": [0.001, 0.01], "beta": [0.1]}}),
                                             ("dft", {"dft": {"lr": [0.001]}})])
def test_the_method_refusal_suggests_overrides_that_leave_that_method_alone(method, kept):
    """The suggested overrides, pasted after the experiment, compose to a grid of that one method only (a plain
    grid.methods='{…}' would not: Hydra merges it into the experiment's methods)."""
    grid = compose_job(["experiment=smoke"]).grid
    message = grid_override_error([f"method={method}"], grid)
    assert message is not None and "\n" not in message
    suggested = shlex.split(message.split("replace grid.methods: ", 1)[1])
    composed = compose_job(["experiment=smoke", *suggested]).grid
    assert OmegaConf.to_container(composed.methods) == kept
    assert {p.method for p in expand_grid(OmegaConf.to_container(composed))} == {method}


@pytest.mark.parametrize("overrides", [["train.max_steps=3", "grid.seeds=[0,1]"], ["train.lrr=1"], ["methodx=1"]])
def test_other_keys_pass_through_to_hydra(overrides):
    assert grid_override_error(overrides, GRID) is None


def test_sweep_with_a_grid_override_exits_2_before_anything_runs(tiny_world, tmp_path):
    out = run_sweep(tiny_world, tmp_path, "train.lr=abc")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: train.lr=abc: every grid point sets train.lr")
    assert "grid.methods.sft.lr=[abc]" in out.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_typo_gets_hydras_own_error(tiny_world, tmp_path):
    out = run_sweep(tiny_world, tmp_path, "train.lrr=1e-3")
    assert out.returncode != 0
    assert "lrr" in out.stderr and "every grid point" not in out.stderr
    assert not list(tmp_path.rglob("result.json"))
