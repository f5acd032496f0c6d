"""Floor 1 of trainers/: where this process stands, the user-error type, the methods a run may name, and the
run-directory contract.

Imports nothing else of the package; every other layer may import it.
"""
