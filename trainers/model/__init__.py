"""Floor 3 of trainers/: log-probs, the loss registry, multiple-choice scoring, the reference cache and
the HF Trainer subclass that puts a registry loss in `compute_loss`. Imports runtime and data only."""

from __future__ import annotations

import os

import torch

# DeepSpeed (installed for the ZeRO-3 strategy) picks its accelerator when transformers or accelerate
# import it, and on a machine without one it warns on the console of every process, sweep jobs
# included. Naming the CPU, which it falls back to anyway, keeps that to a debug line; a machine with
# an accelerator, or a user who set DS_ACCELERATOR, is left alone. Set here, not in trainers/: accelerate
# imports DeepSpeed when a Trainer is built, and every Trainer is built on this floor or above it, while a
# sweeper's process (which imports trainers/ but not this floor) starts without torch.
_has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
if "DS_ACCELERATOR" not in os.environ and not _has_accelerator:
    os.environ["DS_ACCELERATOR"] = "cpu"
