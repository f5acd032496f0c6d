"""Analysis of sftsweep sweeps: reads run directories (docs/architecture.md) and writes tables, plots and a report.

This package reads run directories only — never W&B, never trainer internals — so that a sweep can be
analysed anywhere its files are, and hand-made run directories are enough to test it.
"""

from __future__ import annotations

from trainers.runtime.methods import METHODS

METHOD_ORDER: tuple[str, ...] = ("sft", "dpo_sft", "minor_sft")


def method_name(method: str) -> str:
    """Display name of a method conf name (trainers/runtime/methods.py; a method no longer registered keeps its
    conf name: its runs can still be read)."""
    return METHODS[method].display if method in METHODS else method


def method_sort_key(method: str) -> tuple[int, str]:
    """Paper methods first in the paper's order, then any other registered loss alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)
