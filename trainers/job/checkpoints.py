"""Which checkpoint a rerun of a job resumes from, decided once on rank 0.

A checkpoint serves resume only: it is reused when the run directory's stamped config hash is the
job's own, and removed when another config wrote it (resuming would mix two experiments). A checkpoint
is complete once the Trainer has written its trainer_state.json, the last file of a save; one without it
(a job killed while saving) is torn: it is removed, never resumed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from trainers.runtime.process import broadcast_from_main, is_main_process
from trainers.runtime.run_dir import EVAL, append_jsonl, config_hash, reset_logs

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


def resumable_checkpoint(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path) -> str | None:
    """The run directory's last checkpoint, if it was saved by this same config; else None.

    Checkpoints of another config (a changed grid point writing to the same directory) are
    removed: resuming from them would mix two experiments.
    """
    stamp, digest = run_dir / ".config_hash", config_hash(cfg)
    same_config = stamp.exists() and stamp.read_text().strip() == digest
    if checkpoint_dir.is_dir() and not same_config:
        shutil.rmtree(checkpoint_dir)
    stamp.write_text(digest)
    if not (cfg.train.resume and same_config and checkpoint_dir.is_dir()):
        return None
    return last_complete_checkpoint(checkpoint_dir)


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
