"""What a job prints on the console: run by hand, a progress bar and its log; inside a sweep, one line.

Inside a sweep the launcher prints each job's start (Hydra's `#k : <overrides>`) and the job its end
line (`minor_sft-lr0.001-b0.1-s0: ok, …`); the sweeper prints progress and the summary. Per-step
numbers always go to metrics.jsonl and W&B, never to the console, whatever is shown here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def hydra_mode() -> RunMode | None:
    """RUN for `python -m trainers.train …`, MULTIRUN inside a sweep, None when composed in code (tests, bench)."""
    return HydraConfig.get().mode if HydraConfig.initialized() else None


def show_progress_bar(cfg: DictConfig) -> bool:
    """`train.progress_bar`, or when it is null: on for a job run by hand, off in a sweep or in code."""
    value = cfg.train.get("progress_bar")
    return hydra_mode() == RunMode.RUN if value is None else bool(value)


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


class _Quiet(logging.Filter):
    """Warnings and errors, plus the INFO lines of `keep` (long steps whose silence would look like a hang)."""

    def __init__(self, keep: tuple[str, ...]):
        super().__init__()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(self.keep)


@contextlib.contextmanager
def quiet_console(enabled: bool, keep: tuple[str, ...] = ("trainers.world",),
                  library_bars: bool = True) -> Iterator[None]:
    """While the block runs: the console shows warnings and errors only (the job's .log file keeps
    everything) and, with `library_bars`, transformers' own progress bars ("Loading weights") are off; both
    restored afterwards, so the launcher's line for the next job still shows. A block that hands its job to
    another process (which quiets its own console) passes library_bars=False and loads no transformers
    (about 1 s of CPU) for bars it never shows."""
    if not enabled:
        yield
        return
    handlers, quiet = _console_handlers(), _Quiet(keep)
    for handler in handlers:
        handler.addFilter(quiet)
    with _no_transformers_bars() if library_bars else contextlib.nullcontext():
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)


@contextlib.contextmanager
def _no_transformers_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
