"""Atomic file writes for the report directory, read while sweeps run: the run directories' own helper
(trainers.runtime.run_dir.atomic_write_bytes), so the project has one implementation."""

from __future__ import annotations

from trainers.runtime.run_dir import atomic_write_bytes as write_bytes
from trainers.runtime.run_dir import atomic_write_text as write_text

__all__ = ["write_bytes", "write_text"]
