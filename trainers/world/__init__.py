"""Floor 4 of trainers/: the embedded default — a synthetic knowledge world, its tokenizer and a tiny
pretrained base model; world 0 shipped in the repo, others built once and cached (`python -m trainers.world`).
Imports runtime, data, model.

Import from its modules: `artifact` (the shipped world's checksums, no torch), `facts` (the world's
questions), `build` (the model and the cache).
"""
