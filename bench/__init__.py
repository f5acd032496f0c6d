"""Benchmarks of sftsweep: ratios measured side by side in one process (see docs/benchmarks.md).

    python -m bench            # the full run behind `make bench`, writes bench/results.json
    python -m bench --smoke    # two steps on a tiny world: checks the harness, not the hardware
"""
