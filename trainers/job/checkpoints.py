"""Which checkpoint a rerun of a job resumes from, decided once on rank 0, and what is left of them at the end.

A checkpoint serves resume only: it is reused when the run directory's stamped config hash is the
job's own, and removed when another config wrote it (resuming would mix two experiments). It is also
reused only under the layout that wrote it (strategy and world size, stamped beside the hash: a
sharded ZeRO-3 or FSDP checkpoint of 8 ranks is not a state 2 ranks, or another strategy, can load);
the config hash leaves the layout out on purpose, since it does not change a job's numbers. A checkpoint
is complete once the Trainer has written its trainer_state.json, the last file of a save; one without it
(a job killed while saving) is torn: it is removed, never resumed. When a job ends ok its checkpoints
are deleted (`train.keep_checkpoints` keeps them): nothing will resume from them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from trainers.runtime.collectives import broadcast_from_main
from trainers.runtime.process import is_main_process, world_size
from trainers.runtime.run_dir import EVAL, append_jsonl, config_hash, reset_logs

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete(checkpoint: Path) -> bool:
    """Whether a checkpoint's save finished: its trainer_state.json (the Trainer writes it last) is there and
    parses."""
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The highest-step complete checkpoint under `checkpoint_dir`; torn ones (no trainer_state.json, a job
    killed while saving) are removed, so that neither a resume nor the Trainer's rotation counts them."""
    found = sorted((int(m.group(1)), p) for p in checkpoint_dir.iterdir()
                   if p.is_dir() and (m := _CHECKPOINT.match(p.name)))
    complete = None
    for _, path in found:
        if is_complete(path):
            complete = path
        else:
            shutil.rmtree(path)
    return str(complete) if complete else None


def checkpoint_layout(cfg: DictConfig) -> dict[str, object]:
    """What a checkpoint's state is split by: the strategy and the number of processes that wrote it."""
    strategy = cfg.get("strategy")
    return {"strategy": strategy.name if strategy is not None else "single", "world_size": world_size()}


def _describe(layout: dict[str, object]) -> str:
    return f"strategy={layout.get('strategy')} on {layout.get('world_size')} process(es)"


def resumable_checkpoint(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path) -> str | None:
    """The run directory's last checkpoint, if it was saved by this same config and layout; else None.

    Checkpoints of another config (a changed grid point writing to the same directory) or another layout
    (strategy, world size) are removed: resuming from them would mix two experiments, or load a state
    split for other ranks. A layout change is said in one log line.
    """
    stamp, digest = run_dir / ".config_hash", config_hash(cfg)
    layout_stamp, layout = run_dir / ".checkpoint_layout", checkpoint_layout(cfg)
    same_config = stamp.exists() and stamp.read_text().strip() == digest
    try:
        stamped_layout = json.loads(layout_stamp.read_text())
    except (OSError, ValueError):
        stamped_layout = None
    same_layout = stamped_layout == layout
    if checkpoint_dir.is_dir() and not (same_config and same_layout):
        if same_config and cfg.train.resume and any(checkpoint_dir.iterdir()):
            log.warning("Not resuming: the checkpoints in %s were written by %s, this job runs %s; starting afresh",
                        checkpoint_dir, _describe(stamped_layout or {"strategy": "?", "world_size": "?"}),
                        _describe(layout))
        shutil.rmtree(checkpoint_dir)
    stamp.write_text(digest)
    layout_stamp.write_text(json.dumps(layout))
    if not (cfg.train.resume and same_config and checkpoint_dir.is_dir()):
        return None
    return last_complete_checkpoint(checkpoint_dir)


def remove_checkpoints(cfg: DictConfig, checkpoint_dir: Path) -> None:
    """After an ok end (rank 0): delete the job's checkpoints unless `train.keep_checkpoints` is set. Renamed
    aside first, so that a job killed while deleting leaves no half-deleted checkpoint that looks complete."""
    if cfg.train.get("keep_checkpoints") or not checkpoint_dir.is_dir():
        return
    doomed = checkpoint_dir.with_name(f".{checkpoint_dir.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    checkpoint_dir.rename(doomed)
    shutil.rmtree(doomed)


def checkpoint_step(checkpoint: str | None) -> int | None:
    """The global step of an HF checkpoint folder (`checkpoint-<step>`), None for no checkpoint."""
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None


def start_or_resume(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path, base_accuracy: float,
                    n_eval: int) -> str | None:
    """The checkpoint every rank resumes from (None: a fresh start), decided on rank 0.

    Rank 0 also trims the step logs to the checkpoint's step, or starts them with the base model's
    evaluation at step 0 (mθ is 0 there by definition: the policy is the reference).
    """
    resume_from = None
    if is_main_process():
        resume_from = resumable_checkpoint(cfg, run_dir, checkpoint_dir)
        reset_logs(run_dir, checkpoint_step(resume_from))
        if not resume_from:
            append_jsonl(run_dir / EVAL, {"step": 0, "accuracy": base_accuracy, "m_theta": 0.0, "n": n_eval})
    return broadcast_from_main(resume_from)
