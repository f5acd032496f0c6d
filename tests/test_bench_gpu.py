"""The GPU benchmark's harness runs on the CPU (tiny shape) and its FLOP count is the documented one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.gpu import ModelShape, main, step_flops


def test_runs_on_cpu_and_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    results = main(["--device", "cpu", "--shape", "tiny", "--steps", "1", "--batch-sizes", "2",
                    "--seq-len", "32", "--peak-tflops", "1", "--peer-reps", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    (row,) = results["rows"]
    assert row["status"] == "ok" and row["batch_size"] == 2
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"] and row["minor_sft_over_sft"] > 0
    # the tiny Qwen2 by hand: tied embedding 1024 x 64; per layer q 64x64+64, k and v 64x32+32 (2 kv heads of
    # 16), o 64x64, gate/up/down 3 x 64x128, two norms of 64; a final norm of 64
    layer = (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert results["params"] == 1024 * 64 + 2 * layer + 64 == 139_840


def test_step_flops_count_dense_head_and_causal_attention() -> None:
    shape = ModelShape(vocab_size=100, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2,
                       num_kv_heads=1, max_positions=64)
    n_params = 100 * 8 + 1000  # tied embedding + 1,000 other parameters
    # batch 2 x 10 tokens, 3 answer tokens each:
    dense = 6 * 1000 * 20  # every non-embedding weight, forward and backward, per token
    head = 6 * 100 * 8 * 2 * 3  # the LM head at the 6 answer positions only
    attention = 6 * 2 * 8 * 10 * 20  # 6 L d S per token
    assert step_flops(shape, n_params, batch_size=2, seq_len=10, answer_tokens=3) == dense + head + attention


def test_asking_for_a_gpu_where_there_is_none_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal cannot happen here")
    with pytest.raises(SystemExit, match="no GPU is visible"):
        main(["--device", "cuda", "--out", str(tmp_path / "x.json")])

