"""The entry of one job: `python -m trainers.train method=minor_sft train.lr=2e-4 method.beta=0.1`.

Hydra composes the config; this module checks it and hands the job to where it runs: this process (a job run
by hand), the sweep's job runner (a multirun: a job's death is recorded, not the sweeper's), or torchrun's
workers (several processes). The job itself is trainers/recipe.py, read top to bottom.

No torch at import: in a sweep this module is the sweeper's main module (and a joblib worker's or a submitit
job's), which checks and launches but never trains; the recipe is imported where a job runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.types import RunMode
from omegaconf import DictConfig

from trainers.data.mcq import DataError
from trainers.job.agent import launch
from trainers.job.arguments import shards_the_model
from trainers.job.config import CONF_DIR
from trainers.job.console import hydra_mode, quiet_console, show_progress_bar
from trainers.job.entry_errors import one_line_input_errors, restore_full_error
from trainers.job.isolate import run_isolated
from trainers.job.plan import check_fits, make_plan, on_gpu
from trainers.job.save_request import serving_save_requests
from trainers.job.validate import check_devices, validate_config
from trainers.runtime.errors import ConfigError
from trainers.runtime.lifeline import hold
from trainers.runtime.process import planned_world_size

RECIPE = "trainers.recipe"  # the job, by module name: imported by the process that runs it, never by the sweeper's


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final accuracy on the selection split (trainers.data.selection), the
    objective of an Optuna search: choices are made on that split, the report quotes the other.

    In a multirun (sweep) an input error is raised for the sweeper to report; on its own the
    job prints it in one line and exits with status 2.
    """
    restore_full_error()  # the config is composed: an error from here on is the job's, reported as Hydra does
    distributed = planned_world_size(cfg) > 1 or shards_the_model(cfg)  # FSDP/ZeRO-3 need a process group
    multirun = hydra_mode() == RunMode.MULTIRUN
    if multirun:
        hold()  # a job's process (a joblib worker, a submitit job) ends with its sweeper, SIGKILL included
        logging.raiseExceptions = False  # a log line a full disk cannot take is dropped, not a traceback per line
    try:
        check_devices(cfg)
        validate_config(cfg)
        if on_gpu(cfg):  # a job that cannot fit its GPU is refused before it loads anything
            check_fits(cfg, make_plan(cfg))
        if cfg.get("prepare_only"):  # the sweep's prepare job: on the same devices as its grid jobs
            with quiet_console(multirun, library_bars=False):  # in a multirun the job runs in another process
                if distributed:
                    launch(cfg, quiet=multirun)
                elif multirun:
                    run_isolated(f"{RECIPE}:prepare_caches", cfg, quiet=multirun)
                else:
                    from trainers.recipe import prepare_caches  # a job run by hand trains in this process

                    prepare_caches(cfg)
            return None
        quiet = multirun and not show_progress_bar(cfg)
        with quiet_console(quiet, library_bars=False), serving_save_requests(Path(cfg.run_dir)):
            if distributed:
                result = launch(cfg, quiet=quiet)
            elif multirun:  # in a sweep a job's death is recorded, never the sweeper's or its siblings'
                result = run_isolated(f"{RECIPE}:run_job", cfg, quiet=quiet)
            else:
                from trainers.recipe import run_job  # a job run by hand trains in this process

                result = run_job(cfg)
    except (ConfigError, DataError) as exc:
        if multirun:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    accuracy = "n/a" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
    m_theta = "n/a" if result["m_theta"] is None else f"{result['m_theta']:.4g}"  # every digit is in result.json
    print(
        f"{result['run_name']}: {result['status']}, base accuracy {result['base_accuracy']:.4f}, "
        f"final accuracy {accuracy}, eval m_theta {m_theta}, {result['wall_s']:.1f} s -> {cfg.run_dir}",
        flush=True,
    )
    return result["select_accuracy"] if result.get("select_accuracy") is not None else result["accuracy"]


def cli() -> None:
    """`python -m trainers.train`: Hydra's entry point, with the input Hydra rejects (a typo'd key, an unknown
    config, a malformed override) as one line and status 2 (trainers/job/entry_errors.py)."""
    with one_line_input_errors():
        main()


if __name__ == "__main__":
    cli()
