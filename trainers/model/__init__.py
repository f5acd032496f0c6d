"""Floor 3 of trainers/: log-probs, the loss registry, multiple-choice scoring, the reference cache and
the HF Trainer subclass that puts a registry loss in `compute_loss`. Imports runtime and data only."""
