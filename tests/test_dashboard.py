"""The W&B dashboard specification reads exactly what the runs log, for every method of the sweep.

The keys are checked against real offline W&B run files (decoded by tests/wandb_records.py): one
job per method and the report's summary run. Publishing to a W&B server is not tested here (no
network, no key); only the offline specification is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from analysis.dashboard import ACCURACY, EVAL_M_THETA, SPEC_FILE, TRAIN_M_THETA, main, referenced_keys
from analysis.report import build_report
from trainers.recipe import run_job
from wandb_records import offline_config, offline_history

# in one pytest-xdist worker, so the module fixture below runs once
pytestmark = pytest.mark.xdist_group("dashboard")

METHODS = {"sft": "method.beta=null", "dpo_sft": "method.beta=0.1", "minor_sft": "method.beta=0.5"}
GROUP = "dash-test"


@pytest.fixture(scope="module")
def logged_sweep(tiny_world, tmp_path_factory):
    """A three-method sweep directory with offline W&B runs, plus the report's offline summary run."""
    import conftest

    root = tmp_path_factory.mktemp("dash")
    sweep = root / "sweep"
    keys: set[str] = set()
    config: set[str] = set()
    for method, beta in METHODS.items():
        cfg = conftest.compose_job([
            f"run_dir={sweep / method / 'lr0.001'}", f"paths.cache_dir={root / 'cache'}",
            f"paths.embedded_dir={tiny_world.root}", "model.embedded=false", "logger=wandb",
            f"method={method}", beta, "train.lr=1e-3", f"experiment_name={GROUP}", "train.max_steps=4",
            "train.global_batch_size=8", "train.per_device_batch_size=8", "train.logging_steps=2",
            "train.eval_steps=2", "train.num_threads=1",
        ])
        assert run_job(cfg)["status"] == "ok"
        (run_file,) = Path(cfg.run_dir).glob("wandb/offline-run-*/run-*.wandb")
        _, rows = offline_history(run_file)
        keys |= {k for r in rows for k in r}
        config |= set(offline_config(run_file))
    build_report(sweep, use_wandb=True)
    (summary_file,) = (sweep / "report").glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 120  # W&B's service process may still be flushing the file after finish()
    while not ((meta := offline_history(summary_file)[0]) and offline_history(summary_file)[1]):
        assert time.monotonic() < deadline, (f"{summary_file} still lacks its run record or history 120 s after "
                                             f"finish(): run record {meta}, {summary_file.stat().st_size} bytes")
        time.sleep(0.2)
    meta, rows = offline_history(summary_file)
    assert meta["group"] == GROUP and meta["job_type"] == "analysis"
    keys |= {k for r in rows for k in r}
    # a logged wandb.Table is a dict value whose nested keys are decoded separately: `tables/x/_type`, …
    keys |= {k.removesuffix("/_type") for k in keys if k.endswith("/_type")}
    return sweep, keys, config


@pytest.mark.slow
def test_offline_spec_reads_only_logged_keys_for_every_method(logged_sweep, monkeypatch, capsys):
    sweep, logged_keys, logged_config = logged_sweep
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main([str(sweep), "--entity", "me", "--project", "proj"]) == 0
    out = capsys.readouterr().out
    spec = json.loads((sweep / "report" / SPEC_FILE).read_text())
    assert spec["group"] == GROUP and spec["methods"] == sorted(METHODS)

    metrics, config = referenced_keys(spec["panels"])
    assert metrics <= logged_keys, metrics - logged_keys
    assert config <= logged_config, config - logged_config
    assert {TRAIN_M_THETA, EVAL_M_THETA, ACCURACY, "tables/threshold", "tables/claims"} <= metrics
    assert "tables/claims_across" not in metrics  # one setting: the report has no across table to show
    for method in METHODS:  # its own mθ curves, and a run set of its own in the accuracy plot
        mine = [p for p in spec["panels"] if any(f"= '{method}'" in r["filters"] for r in p["runsets"])]
        assert {y for p in mine for y in p["y"]} >= {TRAIN_M_THETA, EVAL_M_THETA, f"summary:{ACCURACY}"}
    assert all(f"Group = '{GROUP}'" in r["filters"] for p in spec["panels"] for r in p["runsets"])
    assert spec["workspace"]["entity"] == "me" and spec["workspace"]["project"] == "proj"
    # the one command that publishes it later
    assert out.strip().splitlines()[-1].endswith(f"-m analysis.dashboard {sweep} --entity me --project proj")
    assert "WANDB_MODE=online" in out.strip().splitlines()[-1]


def test_empty_sweep_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
