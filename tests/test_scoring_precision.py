"""The reference and the base model are scored in the arithmetic the strategy trains with, so that mθ starts at 0:
under FSDP2's bf16 policy the parameters themselves are bf16 (and accelerate autocasts), under DeepSpeed bf16 the
parameters are bf16 without autocast; fp32 weights under autocast would leave a precision offset in every r."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import AutoModelForCausalLM

from trainers.data.batching import collate
from trainers.job.prepare import prepare
from trainers.model.logprobs import answer_logps
from trainers.model.scoring import score_samples

# (strategy, whether its forward runs under bf16 autocast): accelerate wraps the forward in autocast under FSDP2,
# never under DeepSpeed (its engine casts the parameters and leaves the buffers, rotary inv_freq, in fp32)
SHARDED_BF16 = [("fsdp", True), ("deepspeed_zero3", False)]


def policy_at_step_0(path: str) -> torch.nn.Module:
    """The checkpoint as the sharded strategy's forward reads it: every parameter rounded to bf16, buffers fp32."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for param in model.parameters():
        param.data = param.data.to(torch.bfloat16)
    return model


@pytest.mark.parametrize(("strategy", "autocast"), SHARDED_BF16)
def test_step_0_m_theta_is_zero_under_a_sharded_bf16_policy(job_cfg, strategy, autocast):
    cfg = job_cfg(f"strategy={strategy}", "train.bf16=true", "model.dtype=float32", "method=minor_sft",
                  "train.track_m_theta=true")
    prepared = prepare(cfg, reference=True, keep_model=False)
    policy = policy_at_step_0(cfg.model.path)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    train, evals = prepared.train_samples, prepared.eval_samples
    n_train = torch.tensor([s.n_tokens for s in train], dtype=torch.float32)
    n_eval = torch.tensor([s.n_tokens for s in evals], dtype=torch.float32)
    with context, torch.no_grad():
        # the eval pass at step 0 (the trainer's evaluate scores in the same batches as the base pass)
        evaluated = score_samples(policy, evals, prepared.letter_ids, prepared.pad_id, cfg.train.eval_batch_size)
        # the first training batch: the loss's own log-probs against the cached reference
        batch = collate(train, prepared.pad_id)
        train_lp = answer_logps(policy, batch["input_ids"], batch["attention_mask"], batch["labels"])[0].float()
    eval_m = (evaluated.logps - prepared.base.logps) / n_eval
    train_m = (train_lp - torch.tensor(prepared.ref_logps)) / n_train
    assert eval_m.abs().max() <= 1e-6, f"eval m_theta at step 0 up to {eval_m.abs().max():.2e}"
    assert abs(train_m.mean()) <= 1e-3, f"train m_theta at step 0 {train_m.mean():.2e}"
    assert torch.equal(evaluated.preds, prepared.base.preds)  # base accuracy is the policy's at step 0


def test_the_cache_keeps_each_arithmetic_apart(job_cfg, tmp_path):
    """fp32 weights under autocast (single/DDP), bf16 weights under autocast (FSDP) and bf16 weights without it
    (DeepSpeed) give different numbers: each is a cache entry of its own."""
    passes = []
    for strategy in ("single", "fsdp", "deepspeed_zero3"):
        cfg = job_cfg(f"strategy={strategy}", "train.bf16=true", "model.dtype=float32", cache=tmp_path / "shared")
        passes.append((prepare(cfg, reference=True, keep_model=False).reference_pass, cfg))
    assert [p for p, _ in passes] == ["computed"] * 3
    again = prepare(passes[1][1], reference=True, keep_model=False)
    assert again.reference_pass == "cached"
