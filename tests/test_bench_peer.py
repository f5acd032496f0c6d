"""Rows 10-14 of the bench (bench/peer.py): our trainer against TRL's SFTTrainer on equal work, each variant in
a process of its own where memory is measured. No timing is asserted; what is asserted is that the two do
the same work: the same weights and batch give each side the loss its own formula gives."""

from __future__ import annotations

import pytest

from bench.peer import measure_peer_processes
from bench.vocab import SMOKE_SHAPE

pytestmark = pytest.mark.slow


def test_each_variant_runs_in_its_own_process_and_logs_the_loss_of_its_formula() -> None:
    peer = measure_peer_processes(SMOKE_SHAPE, reps=1, threads=1, variants=("ours_sft", "trl_nll"))
    assert peer["separate_processes"] and peer["memory_measure"] == "peak_rss_mb"
    assert set(peer["ratios"]) == set(peer["memory"]) == {"sft_over_trl_nll"}
    assert set(peer["peak_memory_mb"]) == {"ours_sft", "trl_nll"} and min(peer["peak_memory_mb"].values()) > 0
    losses = peer["first_loss"]
    assert set(losses) == {"ours_sft", "trl_nll"}
    # every answer of the bench batch has the same number of tokens: ours and TRL's normalisations coincide
    assert losses["ours_sft"]["expected"] == pytest.approx(losses["trl_nll"]["expected"], rel=1e-6)
    for variant, f in losses.items():
        assert f["max_abs_diff"] <= 1e-5 * max(1.0, abs(f["expected"])), (variant, f)
