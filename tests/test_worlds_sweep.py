"""experiment=worlds end to end on three tiny worlds: each world a setting of one sweep, then the report per
world and across the worlds, the same from the one sweep directory as from the worlds' directories."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO_ROOT, TINY_WORLD
from trainers.world.build import ensure_embedded_world, world_dir

pytestmark = pytest.mark.slow  # a sweep of real (tiny) training jobs


def test_worlds_sweep_runs_each_world_as_a_setting_and_the_report_judges_across_them(tiny_world, tmp_path):
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    shutil.copytree(tiny_world.root, world_dir(cache, 0))  # the session's world is seed 0's: one build less
    for seed in (0, 1, 2):  # where data.world_seed puts each world, built small (model.embedded=false: no rebuild)
        ensure_embedded_world(world_dir(cache, seed), dataclasses.replace(TINY_WORLD, seed=seed))
    run = subprocess.run(
        [sys.executable, "-m", "trainers.train", "-m", "experiment=worlds", "~grid.settings.world3",
         "~grid.settings.world4", "model.embedded=false",
         f"paths.cache_dir={cache}", f"hydra.sweep.dir={sweep}", "logger=none", "hydra.sweeper.poll_interval_s=0.5",
         "~grid.methods.dpo_sft", "grid.methods.sft.lr=[1e-3]", "grid.methods.minor_sft.lr=[1e-3]",
         "grid.methods.minor_sft.beta=[0.1]", "grid.refine=null",
         "train.max_steps=4", "train.global_batch_size=8", "train.per_device_batch_size=8", "train.logging_steps=2",
         "data.n_train=40", "data.n_eval=20"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("[sweep] preparing") == 3  # one world, one prepare job each
    results = {p.relative_to(sweep).parts[0]: json.loads(p.read_text()) for p in sweep.rglob("result.json")}
    assert len(list(sweep.rglob("result.json"))) == 6
    assert {name: r["world_seed"] for name, r in results.items()} == {"world0": 0, "world1": 1, "world2": 2}
    golds = {name: [json.loads(line)["gold"] for line in next((sweep / name / "sft").rglob("predictions.jsonl"))
                    .read_text().splitlines()] for name in results}
    assert golds["world0"] != golds["world1"] != golds["world2"]  # each setting trained and scored on its world

    def report(*dirs, out):
        done = subprocess.run([sys.executable, "-m", "analysis.report", *map(str, dirs), "--no-wandb", "--out",
                               str(out)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return pd.read_csv(out / "claims.csv"), pd.read_csv(out / "claims_across.csv")

    claims, across = report(sweep, out=tmp_path / "one")
    worlds = ["embedded · world 0", "embedded · world 1", "embedded · world 2"]
    assert sorted(claims["setting"].unique()) == ["across settings", *worlds]
    assert pd.read_csv(tmp_path / "one" / "unfinished.csv").empty  # every planned point matched in its own world
    best = claims[(claims["claim"] == "MinorSFT is the best method")].set_index("setting")
    evidence = best.loc["across settings", "evidence"]
    assert "Bayesian random effects" in evidence and "(3 settings)" in evidence
    assert set(across["n_settings"]) <= {0, 1, 2, 3} and (across["n_settings"] == 3).any()
    separate, separate_across = report(*(sweep / f"world{s}" for s in (0, 1, 2)), out=tmp_path / "three")
    assert claims.equals(separate) and across.equals(separate_across)
