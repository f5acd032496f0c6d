"""The GPU benchmark's harness runs on the CPU (tiny shape), its FLOP count and peak table are the documented
ones, and the GPU check runs in a simulated offline node (opt-in: SFTSWEEP_GPU_NODE)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from bench.gpu import SHAPES, ModelShape, flops_per_token, main, mfu, non_embedding_params, peak_for, step_flops


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



@pytest.mark.parametrize(("name", "memory_gib", "sms", "expected"), [
    ("NVIDIA H100 80GB HBM3", 79.2, 132, 989.0),  # the SXM card's name: HBM3 (the PCIe card has HBM2e)
    ("NVIDIA H100 PCIe", 79.6, 114, 756.0),
    ("NVIDIA H100 NVL", 93.1, 132, 835.0),
    ("NVIDIA H100", 93.1, 132, 835.0),  # a bare name with the NVL card's 94 GB
    ("NVIDIA H100", 79.6, 132, None),  # 80 GB: SXM or PCIe, not guessed
    ("NVIDIA H200", 139.8, 132, 989.0),
    ("NVIDIA GH200 480GB", 94.5, 132, 989.0),
    ("NVIDIA A100-SXM4-80GB", 79.2, 108, 312.0),
    ("NVIDIA L40", 44.5, 142, 181.0),
    ("Tesla T4", 14.6, 40, None),
])
def test_peak_comes_from_the_reported_name_and_memory(name: str, memory_gib: float, sms: int,
                                                      expected: float | None) -> None:
    peak, source = peak_for(name, memory_gib, sms)
    assert peak == expected
    assert name in source


def test_a_mig_slice_gets_its_share_of_the_peak() -> None:
    # a 3g.40gb slice of an H100 SXM: 60 of the card's 132 multiprocessors
    peak, source = peak_for("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 39.5, 60)
    assert peak == pytest.approx(989.0 * 60 / 132) and "60/132" in source


def test_flops_per_token_and_mfu_by_hand() -> None:
    # 1M non-embedding parameters, 2 layers of width 64, 100-token sequences:
    # 6 x 1e6 = 6,000,000 (weights, forward and backward) + 6 x 2 x 64 x 100 = 76,800 (causal attention)
    assert flops_per_token(1_000_000, num_layers=2, hidden_size=64, seq_len=100) == 6_076_800
    # 1,000 tokens/s at that cost = 6.0768 GFLOP/s, on a 1 TFLOP/s device
    assert mfu(1000.0, 6_076_800, peak_tflops=1.0) == pytest.approx(0.0060768)


@pytest.mark.parametrize("tied", [True, False])
def test_non_embedding_parameters_leave_out_the_embedding_and_the_head(tied: bool) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = SHAPES["tiny"]
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
            num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
            tie_word_embeddings=tied))
    # the hand count of test_runs_on_cpu_and_writes_its_rows without the 1024 x 64 embedding (and head, untied)
    assert non_embedding_params(model) == 139_840 - 1024 * 64 == 74_304


def test_job_mfu_uses_only_the_steps_after_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Qwen2Config

    import bench.gpu_check as gpu_check

    s = SHAPES["tiny"]
    model_dir = tmp_path / "model"
    Qwen2Config(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"]).save_pretrained(model_dir)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # 6 steps of 8 samples x 10 tokens; the first 3 slow (wrapping, warm-up), the whole fit's rate far lower
    (run_dir / "result.json").write_text(json.dumps({
        "status": "ok", "steps": 6, "train_tokens": 480, "effective_batch": 8, "tokens_per_s": 5.0,
        "peak_gpu_memory_gb": None}))
    rates = [10, 20, 30, 100, 120, 110]
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "loss": 1.0, "tokens_per_s": v}) + "\n" for i, v in enumerate(rates)))
    monkeypatch.setattr(gpu_check, "peak_tflops", lambda device, given: (1.0, "a 1 TFLOP/s device"))
    out = gpu_check.summary(run_dir, ["logger=none", "model.embedded=false", f"model.path={model_dir}",
                                      "model.name=tiny", "model.dtype=float32"])
    assert out["tokens_per_s_after_warmup"] == 110  # the median of steps 4-6
    assert out["mean_seq_len"] == 10
    # (6 x 74,304 + 6 x 2 x 64 x 10) FLOPs per token = 453,504; x 110 tokens/s ÷ 1e12
    assert out["mfu"] == pytest.approx(453_504 * 110 / 1e12)


@pytest.mark.slow
def test_simulated_offline_node(tmp_path: Path) -> None:
    """bench/gpu_node.sh: the check's CPU parts on the node's versions, the kit installed offline. Opt-in (minutes,
    and the venv's first build needs PyPI): SFTSWEEP_GPU_NODE=.cache/gpu-node after `make gpu-kit-check`."""
    repo = Path(__file__).resolve().parents[1]
    node = os.environ.get("SFTSWEEP_GPU_NODE")
    if not node or not (Path(node) / "bin" / "python").exists():
        pytest.skip("set SFTSWEEP_GPU_NODE to the venv `make gpu-kit-check` builds (.cache/gpu-node: Python 3.12, "
                    "torch 2.11, transformers 5.17, accelerate 1.15, no Hydra)")
    if not list((repo / "gpu-kit").glob("*.whl")):
        pytest.skip("no gpu-kit/: run make gpu-kit (needs PyPI)")
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "bench/gpu_node.sh", str(out)], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "NODE": str(Path(node).resolve())})
    assert (out / "gpu_check.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    env = record["environment"]
    assert env["python"].startswith("3.12.") and env["torch"].startswith("2.11.0")
    assert (env["transformers"], env["accelerate"]) == ("5.17.0", "1.15.0")
    assert env["hydra_from"] == str(out / "site")  # Hydra from the kit, installed offline
    assert env["deepspeed_import"] == "ok" and env["deepspeed"] == "0.19.8"  # the kit's, built here
    assert record["ok"] and proc.returncode == 0, record
    stages = record["stages"]
    assert {"setup", "job-ddp", "job-deepspeed_zero3", "first-m-theta", "resume", "bench-gpu"} <= set(stages)
    assert stages["setup"]["world_stats"]["fact_recall"] > 0.5  # step-0 m_theta from trained weights
    for strategy in ("ddp", "deepspeed_zero3"):
        job = stages[f"job-{strategy}"]
        assert job["status"] == "ok" and job["tokens_per_s_after_warmup"] > 0
    methods = {p.stem for p in (repo / "conf" / "method").glob("*.yaml")}
    assert set(stages["first-m-theta"]) == methods
    assert all(v is not None and abs(v) <= 1e-3 for v in stages["first-m-theta"].values())
    resume = stages["resume"]
    assert resume["status"] == "ok" and resume["resumed_from_step"] == resume["saved_at_step"]
    assert not [k for k, why in record["not_measured"].items() if "budget" in why]  # nothing cut short
