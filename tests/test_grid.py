"""Grid expansion: exact job counts, β-free methods once per lr, bad entries named."""

from __future__ import annotations

import pytest

from sweep.grid import GridError, GridPoint, Setting, expand_grid
from sweep.overrides import grid_override_error


def test_beta_free_methods_run_once_per_lr_and_seed():
    points = expand_grid({
        "seeds": [0, 1],
        "methods": {"sft": {"lr": [1e-4, 1e-3, 1e-2]}, "minor_sft": {"lr": [1e-4, 1e-3], "beta": [0.1, 0.5, 1.0]}},
    })
    assert len(points) == 3 * 2 + 2 * 3 * 2
    assert {p.beta for p in points if p.method == "sft"} == {None}
    assert len({(p.method, p.lr, p.beta, p.seed) for p in points}) == len(points)
    assert points[0] == GridPoint("sft", 1e-4, None, 0)


def test_overrides_select_method_group_then_values():
    assert GridPoint("minor_sft", 3e-4, 0.1, 2).overrides() == [
        "method=minor_sft", "train.lr=0.0003", "method.beta=0.1", "seed=2"]
    assert GridPoint("sft", 1e-3, None, 0).overrides()[2] == "method.beta=null"


@pytest.mark.parametrize(
    ("grid", "names"),
    [
        ({"methods": {}}, "grid.methods"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "seeds": ["a"]}, "grid.seeds"),
        ({"methods": {"magic_sft": {"lr": [1e-3]}}}, "grid.methods.magic_sft"),
        ({"methods": {"sft": {"lr": []}}}, "grid.methods.sft.lr"),
        ({"methods": {"sft": {"lr": [1e-3, -1]}}}, "grid.methods.sft.lr"),
        ({"methods": {"sft": {"lr": [1e-3, 1e-3]}}}, "grid.methods.sft.lr"),
        ({"methods": {"sft": {"lr": [1e-3], "beta": [0.1]}}}, "grid.methods.sft.beta"),
        ({"methods": {"minor_sft": {"lr": [1e-3]}}}, "grid.methods.minor_sft.beta"),
        ({"methods": {"minor_sft": {"lr": [1e-3], "beta": [0]}}}, "grid.methods.minor_sft.beta"),
        ({"methods": {"kl_sft": {"lr": [1e-3], "beta": [-0.1]}}}, "grid.methods.kl_sft.beta"),
        ({"methods": {"dpo_sft": {"lr": [1e-3], "beta": [0.1], "lrs": [1]}}}, "grid.methods.dpo_sft"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": []}, "grid.settings"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": {"w/1": ["data.world_seed=1"]}}, "grid.settings.w/1"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": {"_w": ["data.world_seed=1"]}}, "grid.settings._w"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": {"w1": []}}, "grid.settings.w1"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": {"w1": ["data.world_seed"]}}, "grid.settings.w1"),
        ({"methods": {"sft": {"lr": [1e-3]}}, "settings": {"w1": ["seed=3"]}}, "grid.settings.w1 sets seed"),
    ],
)
def test_bad_grid_entries_are_one_line_errors_naming_them(grid, names):
    with pytest.raises(GridError) as info:
        expand_grid(grid)
    assert names in str(info.value) and "\n" not in str(info.value)


def test_kl_sft_lambda_may_be_zero_and_dft_takes_none():
    points = expand_grid({"methods": {"kl_sft": {"lr": [1e-3], "beta": [0, 0.5]}, "dft": {"lr": [1e-3, 1e-2]}}})
    assert [(p.method, p.beta) for p in points] == [("kl_sft", 0.0), ("kl_sft", 0.5), ("dft", None), ("dft", None)]


def test_losses_experiment_sweeps_every_registered_loss():
    from omegaconf import OmegaConf

    from trainers.job.config import compose_job
    from trainers.model.losses import LOSSES

    points = expand_grid(OmegaConf.to_container(compose_job(["experiment=losses"]).grid, resolve=True))
    assert {p.method for p in points} == set(LOSSES)
    assert len(points) == 5 * (1 + 1 + 1 + 1 + 2)  # five lrs; kl_sft at two λ


def test_default_experiment_is_the_sized_grid_with_its_refinement_and_launcher():
    """`make sweep`'s grid: 4 lrs × (sft + two β for each β method) on seed 0, one refinement round with
    seeds 0-2, two one-thread jobs at a time (what keeps it within 15 minutes on 2 cores)."""
    from omegaconf import OmegaConf

    from sweep.refine import RefineSpec, refine_spec
    from trainers.job.config import compose_job

    cfg = compose_job(["experiment=default"])
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    assert len(expand_grid(grid)) == 4 * (1 + 2 + 2)
    assert refine_spec(grid) == RefineSpec(rounds=1, factor=2.0, seeds=(0, 1, 2))
    assert cfg.train.num_threads == 1
    assert compose_job(["experiment=default", "launcher=local"]).train.num_threads == 2  # the user's launcher wins


def test_each_setting_runs_the_whole_grid_with_its_overrides_first():
    points = expand_grid({"seeds": [0, 1], "methods": {"sft": {"lr": [1e-4, 1e-3]}},
                          "settings": {"world0": ["data.world_seed=0"], "world1": ["data.world_seed=1"]}})
    assert len(points) == 2 * 2 * 2
    w1 = Setting("world1", ("data.world_seed=1",))
    assert [p for p in points if p.setting == w1] == [GridPoint("sft", lr, None, s, w1) for lr in (1e-4, 1e-3)
                                                      for s in (0, 1)]
    assert points[-1].overrides() == ["data.world_seed=1", "method=sft", "train.lr=0.001", "method.beta=null", "seed=1"]
    assert points[-1].label() == "world1: sft lr=0.001 seed=1"


def test_worlds_experiment_is_the_default_grid_on_five_worlds():
    from omegaconf import OmegaConf

    from trainers.job.config import compose_job

    default = OmegaConf.to_container(compose_job(["experiment=default"]).grid, resolve=True)
    cfg = compose_job(["experiment=worlds"])
    worlds = OmegaConf.to_container(cfg.grid, resolve=True)
    assert worlds.pop("settings") == {f"world{s}": [f"data.world_seed={s}"] for s in range(5)}
    assert worlds == default and cfg.experiment_name == "worlds" and cfg.train.num_threads == 1
    assert compose_job(["experiment=default"]).grid.get("settings") is None  # `make sweep` stays on one world


def test_an_override_that_a_grid_setting_would_overwrite_is_refused():
    grid = {"methods": {"sft": {"lr": [1e-3]}}, "settings": {"world1": ["data.world_seed=1"]}}
    error = grid_override_error(["data.world_seed=3"], grid)
    assert error is not None and "grid.settings.world1 sets data.world_seed" in error and "\n" not in error
    assert grid_override_error(["data.n_eval=20"], grid) is None
