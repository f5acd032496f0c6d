"""Floor 5 of trainers/: the parts of one job — config checks, prepare, HF arguments, checkpoints, the
result record, console, W&B, callbacks, and the torchrun agent. Imports every floor below, never
`trainers.recipe`, `trainers.train` or `trainers.worker` (the agent starts the worker by module name)."""
