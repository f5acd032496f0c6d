"""Floor 2 of trainers/: multiple-choice data, prompts, batches, and the select/report split with the
rule that chooses a configuration on it. Imports only `trainers.runtime`."""
