"""Row 5: an N-job grid in one process, counting the passes over the data that a grid should share.

Every job is a real `run_job` with one shared, initially empty cache directory. Counts come from
two independent places: each job's result.json (`tokenize_pass`, `reference_pass`, `base_eval`:
"computed" or "cached") and wrappers around the functions that do the work (`encode_items` for
tokenisation, `score_samples` with progress "reference" / "base_eval" for the scoring passes),
so a pass done outside the cache's bookkeeping would still be counted.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainers.data import prompts
from trainers.job.config import compose_job
from trainers.model import scoring as scoring_module
from trainers.recipe import run_job

GRID_METHODS: tuple[str, ...] = ("sft", "minor_sft", "dpo_sft")
GRID_LRS: tuple[float, ...] = (1e-3, 3e-4)


@contextmanager
def counting(original: Callable[..., Any], key: Callable[..., str]) -> Iterator[Counter]:
    """Count calls of `original` wherever a `trainers` module imported it by name."""
    calls: Counter = Counter()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[key(*args, **kwargs)] += 1
        return original(*args, **kwargs)

    targets = [
        (module, name)
        for module_name, module in list(sys.modules.items())
        if module_name == "trainers" or module_name.startswith("trainers.")
        for name, value in list(vars(module).items())
        if value is original
    ]
    for module, name in targets:
        setattr(module, name, wrapper)
    try:
        yield calls
    finally:
        for module, name in targets:
            setattr(module, name, original)


def measure_grid(base_overrides: list[str], steps: int, work_dir: Path | None = None) -> dict[str, Any]:
    """Run len(GRID_METHODS) x len(GRID_LRS) jobs on one fresh cache; count what was computed."""
    with tempfile.TemporaryDirectory(prefix="bench-grid-", dir=work_dir) as tmp:
        root = Path(tmp)
        jobs = [(m, lr) for m in GRID_METHODS for lr in GRID_LRS]
        results = []
        with counting(prompts.encode_items, lambda items, *a, **k: "calls") as tokenize, \
                counting(scoring_module.score_samples, lambda *a, progress=None, **k: progress or "eval") as scoring:
            for method, lr in jobs:
                cfg = compose_job(base_overrides + [
                    f"method={method}", f"train.lr={lr}", f"train.max_steps={steps}",
                    f"paths.cache_dir={root / 'cache'}", f"run_dir={root / 'runs' / f'{method}_lr{lr}'}",
                ])
                began = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's per-log prints
                    result = run_job(cfg)
                results.append({"method": method, "lr": lr, "status": result["status"],
                                "wall_s": time.perf_counter() - began,
                                **{k: result.get(k) for k in ("tokenize_pass", "reference_pass", "base_eval")}})
    computed = {k: sum(r[k] == "computed" for r in results) for k in ("tokenize_pass", "reference_pass", "base_eval")}
    return {
        "n_jobs": len(jobs),
        "steps_per_job": steps,
        "tokenisations": computed["tokenize_pass"],
        "reference_passes": computed["reference_pass"],
        "base_eval_passes": computed["base_eval"],
        "encode_items_calls": tokenize["calls"],  # one per split (train, eval) per tokenisation
        "reference_scoring_calls": scoring["reference"],
        "base_eval_scoring_calls": scoring["base_eval"],
        "final_eval_calls": scoring["eval"],
        "jobs": results,
    }
