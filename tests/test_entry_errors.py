"""Input that Hydra or the sweeper rejects, through the real entry point (`python -m trainers.train` is `cli()`):
one line on stderr naming the field, status 2 (`make sweep` then runs no report), nothing under the sweep
directory. In-process: every case fails while composing or validating, so no job (and no subprocess) starts."""

from __future__ import annotations

import os
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from trainers.train import cli

SWEEP = ["-m", "launcher=local", "logger=none"]
# no model to train: should a check let a case through, its job fails at once (on model.path) instead of training
NO_MODEL = ["model.embedded=false", "model.path=/nonexistent/model"]


def run_entry(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """(exit status, stderr) of `python -m trainers.train ARGS`, run in this process."""
    monkeypatch.setattr(sys, "argv", ["trainers.train", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    GlobalHydra.instance().clear()
    capsys.readouterr()
    try:
        cli()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "names"),
    [
        # rejected by Hydra while it composes the config
        (["experiment=smoke", "train.max_step=3"], "train.max_step is not a field of the config; did you mean "
                                                   "train.max_steps=3?"),
        (["experiment=smoke", "train.lr=[1"], "the override 'train.lr=[1' is malformed"),
        (["experiment=nosuch"], "experiment=nosuch is not a known experiment; use one of default, "),
        (["experiment=smoke", "launcher=nosuch"], "launcher=nosuch is not a known launcher"),
        (["experiment=smoke", "method=foo"], "method=foo is not a known method"),
        # refused by the sweeper's checks of every point, before any job starts
        (["experiment=smoke", "data.select_fraction=2"], "data.select_fraction=2 must be a number in (0, 1)"),
        (["experiment=smoke", "strategy.nproc_per_node=0"], "strategy.nproc_per_node=0 is invalid"),
        (["experiment=smoke", "train.max_steps=-5"], "train.max_steps=-5 is invalid"),
        (["experiment=smoke", "train.global_batch_size=1000000"],
         "train.global_batch_size=1000000 is more than the data.n_train=320 training questions"),
        (["experiment=smoke", "grid.methods.sft.lr=[inf]"], "grid.methods.sft.lr has inf"),
    ],
)
def test_sweep_input_errors_are_one_line_and_status_2(args, names, tmp_path, capsys, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    status, err = run_entry([*SWEEP, f"hydra.sweep.dir={sweep_dir}", *args, *NO_MODEL], capsys, monkeypatch)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and names in err, err
    assert not sweep_dir.exists()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["method=foo"], "method=foo is not a known method"),
        (["train.lr=inf"], "train.lr=inf is invalid"),
        (["method=sft", "method.beta=0.1"], "method.beta=0.1 is invalid for sft: sft takes no β"),
    ],
)
def test_single_job_input_errors_are_one_line_and_status_2(args, names, tmp_path, capsys, monkeypatch):
    status, err = run_entry([*args, "logger=none", f"paths.output_dir={tmp_path}", *NO_MODEL], capsys, monkeypatch)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and names in err, err
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("metrics.jsonl"))


def test_a_sweep_dir_that_is_a_file_is_refused(tmp_path, capsys, monkeypatch):
    file = tmp_path / "file"
    file.write_text("kept\n")
    for sweep_dir in (file, file / "sweep"):
        status, err = run_entry([*SWEEP, "experiment=smoke", f"hydra.sweep.dir={sweep_dir}"], capsys, monkeypatch)
        assert status == 2 and len(err.strip().splitlines()) == 1 and f"SWEEP_DIR={sweep_dir}" in err, err
    assert file.read_text() == "kept\n"


def test_the_users_hydra_full_error_is_given_back(capsys, monkeypatch):
    """The entry sets HYDRA_FULL_ERROR only while Hydra composes; the user's own setting is left as it was."""
    run_entry(["train.max_step=3"], capsys, monkeypatch)
    assert "HYDRA_FULL_ERROR" not in os.environ
    assert not any(k.startswith("SFTSWEEP_USER_") for k in os.environ)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["trainers.train", "train.max_step=3"])
    with pytest.raises(Exception, match="max_step"):  # the user asked for Hydra's full error: it is raised
        cli()
    GlobalHydra.instance().clear()
    assert os.environ["HYDRA_FULL_ERROR"] == "1"
