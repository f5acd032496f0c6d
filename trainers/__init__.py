"""One training job: losses, data, prompts, reference cache, Trainer, evaluation (knows nothing of sweeps)."""
