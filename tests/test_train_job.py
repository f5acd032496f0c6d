"""One training job end to end on the tiny embedded world: run directory, cache, W&B, failures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import kill_after_first_checkpoint
from trainers.job.config import compose_job, save_job_config
from trainers.job.prepare import load_model, prepare
from trainers.model import losses
from trainers.model.loss_trainer import LossTrainer
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_jsonl
from wandb_records import offline_history

RESULT_KEYS = {"method", "lr", "beta", "seed", "dataset", "model", "status", "error", "accuracy", "m_theta",
               "steps", "train_tokens", "wall_s", "tokens_per_s", "base_accuracy", "eval_n", "group",
               "data_fingerprint", "tokenizer_fingerprint", "model_fingerprint"}


def test_job_writes_the_run_directory(job_cfg, tiny_world):
    cfg = job_cfg("method=minor_sft", "method.beta=0.1", "train.lr=1e-3")
    result = run_job(cfg)
    run_dir = Path(cfg.run_dir)

    assert RESULT_KEYS <= set(result)
    assert json.loads((run_dir / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["status"] == "ok" and result["steps"] == 6
    assert all(len(result[f"{k}_fingerprint"]) == 64 for k in ("data", "tokenizer", "model"))  # sha256 hex
    # 6 steps x 8 questions is one pass over the 48 train questions: every input token counted once
    train_samples = prepare(cfg, reference=False).train_samples
    assert result["train_n"] == 48 and result["train_tokens"] == sum(len(s.input_ids) for s in train_samples)
    n_eval = sum(1 for _ in open(tiny_world.eval_csv)) - 1
    assert result["eval_n"] == n_eval

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 4, 6]
    assert {"loss", "m_theta", "lr", "grad_norm", "tokens_per_s"} <= set(metrics[-1])
    # before the first update the policy is the reference: m_theta is 0 up to float noise
    assert abs(metrics[0]["m_theta"]) < 1e-5
    assert metrics[0]["minor_coef"] == pytest.approx(1.0, abs=1e-5)

    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 3, 6]
    assert evals[0]["accuracy"] == result["base_accuracy"] and evals[0]["m_theta"] == 0.0
    assert evals[-1]["accuracy"] == result["accuracy"] and evals[-1]["m_theta"] == result["m_theta"]
    assert evals[-1]["select_accuracy"] == result["select_accuracy"]  # the same split, while it trains

    predictions = read_jsonl(run_dir / "predictions.jsonl")
    assert len(predictions) == n_eval
    assert sum(p["correct"] for p in predictions) / n_eval == pytest.approx(result["accuracy"])
    assert all(p["pred"] in "ABCD" and p["gold"] in "ABCD" for p in predictions)


def test_reference_pass_runs_once_per_key(job_cfg, tmp_path):
    cache = tmp_path / "shared-cache"
    first = run_job(job_cfg("method=minor_sft", run="a", cache=cache))
    second = run_job(job_cfg("method=dpo_sft", "train.lr=3e-4", run="b", cache=cache))
    assert (first["tokenize_pass"], first["reference_pass"], first["base_eval"]) == ("computed",) * 3
    assert (second["tokenize_pass"], second["reference_pass"], second["base_eval"]) == ("cached",) * 3
    assert second["base_accuracy"] == first["base_accuracy"]
    # other data (a different sample of the training split) is another key
    third = run_job(job_cfg("method=minor_sft", "data.n_train=40", run="c", cache=cache))
    assert (third["tokenize_pass"], third["reference_pass"], third["base_eval"]) == ("computed", "computed", "cached")
    # the data fingerprint kept with the tokenized entry is the one a computing job records; other data, another
    assert second["data_fingerprint"] == first["data_fingerprint"] != third["data_fingerprint"]
    assert len({r["model_fingerprint"] for r in (first, second, third)}) == 1
    assert len(list((cache / "scores").glob("reference-*.safetensors"))) == 2


def test_reference_cache_is_keyed_on_the_model_files_and_dtype(job_cfg, tiny_world, tmp_path):
    """Same data, same model path: new weights under that path, or another dtype, compute the passes again."""
    model = tmp_path / "model"
    shutil.copytree(tiny_world.model_dir, model)
    cache = tmp_path / "keyed-cache"

    def passes(*overrides: str) -> tuple[str, str]:
        p = prepare(job_cfg("method=minor_sft", f"model.path={model}", *overrides, cache=cache), reference=True,
                    keep_model=False)
        return p.reference_pass, p.base_pass

    assert passes() == ("computed", "computed")
    assert passes() == ("cached", "cached")
    weights = load_file(model / "model.safetensors")
    name = next(n for n in sorted(weights) if n.endswith("q_proj.weight"))
    weights[name] = weights[name] * 1.5  # the same file, the same size, other weights
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    assert passes() == ("computed", "computed")
    assert passes() == ("cached", "cached")
    assert passes("model.dtype=bfloat16") == ("computed", "computed")
    assert len(list((cache / "scores").glob("reference-*.safetensors"))) == 3


def test_sft_without_m_theta_tracking_makes_no_reference_pass(job_cfg):
    cfg = job_cfg("method=sft", "train.track_m_theta=false")
    result = run_job(cfg)
    assert result["reference_pass"] == "none" and result["status"] == "ok"
    assert all("m_theta" not in m for m in read_jsonl(Path(cfg.run_dir) / "metrics.jsonl"))


@pytest.mark.parametrize("method", ["dpo_sft", "minor_sft"])
def test_beta_losses_log_the_coefficient_falling_below_one_as_r_grows(job_cfg, method):
    """MinorSFT's sample coefficient 2σ(−βr): 1 at r = 0 (step 1), below 1 once the policy has moved
    toward the data (train mθ = r/m > 0); the SFT-using-DPO run logs the same quantity."""
    cfg = job_cfg(f"method={method}", "method.beta=0.5", "train.lr=1e-3")
    assert run_job(cfg)["status"] == "ok"
    metrics = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")
    assert metrics[0]["minor_coef"] == pytest.approx(1.0, abs=1e-5)
    assert metrics[-1]["m_theta"] > 0 and metrics[-1]["minor_coef"] < 1


def test_token_level_losses_train_from_the_shared_reference(job_cfg, tmp_path):
    """DFT and KL-regularised SFT read per-token log-probs: dft computes the reference pass (per-token values
    included) into the cache, kl_sft on the same cache reads it instead of computing its own."""
    cache = tmp_path / "shared-cache"
    dft = run_job(job_cfg("method=dft", "train.lr=1e-3", run="dft", cache=cache))
    kl_sft = run_job(job_cfg("method=kl_sft", "train.lr=1e-3", run="kl_sft", cache=cache))
    assert (dft["reference_pass"], kl_sft["reference_pass"]) == ("computed", "cached")
    assert len(list((cache / "scores").glob("reference-*.safetensors"))) == 1
    for result in (dft, kl_sft):
        metrics = read_jsonl(tmp_path / result["method"] / "metrics.jsonl")
        assert result["status"] == "ok" and result["steps"] == 6
        assert abs(metrics[0]["m_theta"]) < 1e-5 and metrics[-1]["m_theta"] > metrics[0]["m_theta"]
        assert "minor_coef" not in metrics[0]  # MinorSFT's coefficient is not theirs


def test_non_finite_loss_stops_the_job_as_diverged(job_cfg):
    cfg = job_cfg("method=sft", "train.lr=1e12", "train.max_grad_norm=0", "train.warmup_ratio=0")
    result = run_job(cfg)
    assert result["status"] == "diverged"
    assert "non-finite loss" in result["error"]
    assert result["accuracy"] is None and result["steps"] < 6
    saved = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert saved["status"] == "diverged"


def test_unexpected_error_is_recorded_as_failed(job_cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("loss exploded in a way nobody expected")

    monkeypatch.setitem(losses.LOSSES, "sft", broken)
    cfg = job_cfg("method=sft")
    with pytest.raises(RuntimeError):
        run_job(cfg)
    saved = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert saved["status"] == "failed" and "nobody expected" in saved["error"]


def test_wandb_offline_run_holds_the_metrics_and_never_the_api_key(job_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    key = "k3y0f7h15735700000000000000000000000f4ke"  # 40 characters, like a W&B key; found nowhere below
    monkeypatch.setenv("WANDB_API_KEY", key)
    cfg = job_cfg("logger=wandb", "method=minor_sft", "train.lr=1e-3", "experiment_name=wb-test")
    run_job(cfg)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # run directory (config, logs, wandb/), cache
    assert len(written) > 10 and not [p for p in written if key.encode() in p.read_bytes()]
    run_files = list(Path(cfg.run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    meta, rows = offline_history(run_files[0])
    assert meta == {"name": "minor_sft-lr0.001-b0.1-s0", "group": "wb-test", "job_type": "minor_sft",
                    "tags": ["minor_sft", "embedded", "embedded-llama"]}
    train_rows = [r for r in rows if "train/loss" in r]
    eval_rows = [r for r in rows if "eval/accuracy" in r]
    assert len(train_rows) == 4 and len(eval_rows) == 2
    logged = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")
    assert [r["train/loss"] for r in train_rows] == pytest.approx([m["loss"] for m in logged])
    assert all(math.isfinite(r["train/m_theta"]) for r in train_rows)


def test_trust_remote_code_is_off_unless_set(job_cfg, from_pretrained_calls):
    for model in ("embedded", "qwen2_7b_instruct"):
        assert compose_job([f"model={model}"]).model.trust_remote_code is False
    load_model(job_cfg())
    load_model(job_cfg("model.trust_remote_code=true"))
    assert [kw.get("trust_remote_code") for kw in from_pretrained_calls] == [False, True]


def test_cli_prints_base_and_final_accuracy(tiny_world, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "trainers.train", "method=sft", "logger=none", "model.embedded=false",
         f"paths.embedded_dir={tiny_world.root}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"paths.output_dir={tmp_path / 'out'}", "train.max_steps=4", "train.global_batch_size=8",
         "train.per_device_batch_size=8", "train.eval_steps=0", "train.num_threads=1"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "base accuracy" in out.stdout and "final accuracy" in out.stdout
    results = list((tmp_path / "out").rglob("result.json"))
    assert len(results) == 1 and results[0].parent.name == "lr0.001_betaNone_seed0"


def test_killed_job_resumes_from_its_last_complete_checkpoint_never_a_torn_one(job_cfg):
    """SIGKILL after the first checkpoint, a torn checkpoint (a save killed halfway: half the weights, no
    trainer_state.json) left behind it, rerun: the job resumes from the complete one and the torn one is gone."""
    overrides = ("method=minor_sft", "train.save_steps=2", "train.save_total_limit=2",
                 "train.keep_checkpoints=true")
    cfg = job_cfg(*overrides)
    run_dir, checkpoints = Path(cfg.run_dir), Path(cfg.run_dir) / "checkpoints"
    code = (f"from trainers.job.config import load_job_config\nfrom trainers.recipe import run_job\n"
            f"run_job(load_job_config({str(save_job_config(cfg))!r}))")
    assert kill_after_first_checkpoint(code, checkpoints) == ["checkpoint-2"]
    assert not (run_dir / "result.json").exists()
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    assert [e["step"] for e in read_jsonl(run_dir / "eval.jsonl")] == [0]
    torn = checkpoints / "checkpoint-4"
    torn.mkdir()
    weights = (checkpoints / "checkpoint-2" / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    resumed = run_job(job_cfg(*overrides))
    assert (resumed["status"], resumed["resumed_from_step"], resumed["steps"]) == ("ok", 2, 6)
    # 6 steps x 8 questions: one pass over the 48 train questions, nothing lost, nothing counted twice
    train_samples = prepare(cfg, reference=False).train_samples
    assert resumed["train_tokens"] == sum(len(s.input_ids) for s in train_samples)
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 4, 6]
    assert [e["step"] for e in read_jsonl(run_dir / "eval.jsonl")] == [0, 3, 6]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert json.loads((torn / "trainer_state.json").read_text())["global_step"] == 4  # saved anew, whole
    # another config in the same directory never resumes from these checkpoints
    other = run_job(job_cfg(*overrides, "method.beta=0.5"))
    assert other["resumed_from_step"] is None and other["steps"] == 6


def test_lora_trains_only_adapters_from_the_same_reference(job_cfg, monkeypatch):
    import peft  # noqa: F401  (a dev dependency: `make test` installs it, so its absence fails)
    weights = {}
    original_train = LossTrainer.train

    def train(self, *args, **kwargs):  # the model's weights just before and just after training
        weights["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        out = original_train(self, *args, **kwargs)
        weights["after"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return out

    monkeypatch.setattr(LossTrainer, "train", train)
    cfg = job_cfg("method=minor_sft", "model.lora={r:4,alpha:8,dropout:0.0,target_modules:[q_proj,v_proj]}")
    result = run_job(cfg)
    assert result["status"] == "ok" and result["steps"] == 6
    # 2 layers x (q_proj, v_proj) x r=4 x (in 128 + out 128) (TINY_WORLD: hidden size 128, 4 heads = 4 kv heads)
    assert result["trainable_params"] == 2 * 2 * 4 * (128 + 128) == 4096
    before, after = weights["before"], weights["after"]
    adapters = sorted(n for n in before if "lora_" in n)
    assert len(adapters) == 2 * 2 * 2  # lora_A and lora_B of each adapted module
    assert all(torch.equal(before[n], after[n]) for n in before if n not in adapters)  # base bit-identical
    assert any(not torch.equal(before[n], after[n]) for n in adapters if "lora_B" in n)  # the adapters moved
    metrics = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")
    assert abs(metrics[0]["m_theta"]) < 1e-5  # zero-initialised adapters: the policy starts as the reference


def test_first_step_m_theta_is_zero_under_bf16_autocast_for_every_method(job_cfg, tmp_path):
    """`train.bf16` on this CPU: the Trainer computes under bf16 autocast, and the reference is scored under the
    same autocast, so the policy's own forward at the first step (before any update) gives m_theta 0."""
    methods = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))
    first = {}
    for method in methods:
        cfg = job_cfg(f"method={method}", "train.bf16=true", "train.max_steps=1", "train.logging_steps=1",
                      "train.eval_steps=0", run=method)
        assert run_job(cfg)["status"] == "ok"
        first[method] = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")[0]["m_theta"]
    print(f"first-step m_theta under bf16 autocast: {first}")
    assert len(first) >= 5 and all(abs(m) < 1e-5 for m in first.values()), first


def test_two_accumulation_steps_give_the_first_step_of_one_batch(job_cfg):
    """2 micro-batches of 4 make the same first step as one batch of 8: the loss is a per-micro-batch mean, so the
    Trainer must divide it by the accumulation steps (transformers before 5.19 does so only when the trainer says
    the model takes no loss kwargs; without it the loss and the gradients double)."""
    common = ("method=minor_sft", "method.beta=0.1", "train.max_steps=1", "train.logging_steps=1", "train.eval_steps=0",
              "train.global_batch_size=8")
    one = run_job(cfg_one := job_cfg(*common, "train.per_device_batch_size=8", run="one"))
    two = run_job(cfg_two := job_cfg(*common, "train.per_device_batch_size=4", run="two"))
    assert (one["grad_accumulation"], two["grad_accumulation"]) == (1, 2)
    first_one = read_jsonl(Path(cfg_one.run_dir) / "metrics.jsonl")[0]
    first_two = read_jsonl(Path(cfg_two.run_dir) / "metrics.jsonl")[0]
    print(f"first step, accumulation 1: {first_one}; accumulation 2: {first_two}")
    assert first_two["loss"] == pytest.approx(first_one["loss"], rel=1e-5)
    assert first_two["grad_norm"] == pytest.approx(first_one["grad_norm"], rel=1e-5)


def test_wandb_service_killed_mid_job_is_a_warning_and_the_next_job_is_tracked_again(job_cfg, monkeypatch, caplog):
    """W&B's service (wandb-core) SIGKILLed at step 3 of the first of two jobs run in one process (a sweep's
    job runner): both jobs end ok with every step, one warning says so, and the second job logs to a fresh
    service."""
    import psutil
    from transformers import TrainerCallback

    import trainers.recipe as train_module

    class KillWandbService(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                for child in psutil.Process().children(recursive=True):
                    if "wandb-core" in " ".join(child.cmdline()):
                        child.kill()

    build = train_module.build_trainer

    def build_with_the_kill(cfg, *args, **kwargs):
        trainer = build(cfg, *args, **kwargs)
        if Path(cfg.run_dir).name == "first":
            trainer.add_callback(KillWandbService())
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", build_with_the_kill)
    monkeypatch.setenv("WANDB_MODE", "offline")
    first, second = (job_cfg("logger=wandb", f"seed={seed}", run=run) for seed, run in ((0, "first"), (1, "second")))
    results = [run_job(first), run_job(second)]
    assert [(r["status"], r["steps"]) for r in results] == [("ok", 6), ("ok", 6)]
    assert [json.loads((Path(c.run_dir) / "result.json").read_text())["status"] for c in (first, second)] == ["ok"] * 2
    assert [m["step"] for m in read_jsonl(Path(first.run_dir) / "metrics.jsonl")] == [1, 2, 4, 6]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]
    assert len(warnings) == 1 and "its result is unaffected" in warnings[0], warnings
    (run_file,) = Path(second.run_dir).glob("wandb/offline-run-*/run-*.wandb")
    _, rows = offline_history(run_file)
    assert len([r for r in rows if "train/loss" in r]) == 4  # the second job's W&B run is whole
