"""Gradient identities of the losses (trainers/model/losses.py) on a real (tiny) transformers model."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainers.model.logprobs import answer_mask, answer_targets, token_logps
from trainers.model.losses import LOSSES, TokenLogps, m_theta, minor_coefficient, sequence_logps

BETA = 0.3


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    # float64 weights; LlamaRMSNorm still computes in float32, hence the tolerances below
    return LlamaForCausalLM(config).to(torch.float64)


def _batch(prompt_len: int, answer_len: int, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence of random tokens; labels cover the answer only; `pad` right-padding positions."""
    g = torch.Generator().manual_seed(prompt_len * 100 + answer_len)
    n = prompt_len + answer_len
    ids = torch.randint(1, 40, (1, n + pad), generator=g)
    labels = torch.full_like(ids, -100)
    labels[0, prompt_len:n] = ids[0, prompt_len:n]
    mask = torch.zeros_like(ids)
    mask[0, :n] = 1
    return ids, labels, mask


def _grad(model, method: str, ids, labels, mask, r: float) -> tuple[torch.Tensor, float]:
    """Flattened gradient of one sample's loss, with lp_ref set so that lp - lp_ref = r."""
    model.zero_grad()
    lp = sequence_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
    n_tokens = (labels[:, 1:] != -100).sum(-1).to(lp.dtype)
    ref = lp.detach() - r
    LOSSES[method](lp, ref, n_tokens, BETA).mean().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).clone(), float(n_tokens)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding (relative to the gradient's scale), which RMSNorm introduces."""
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * scale)


def test_sequence_logps_matches_token_loop(model):
    ids, labels, mask = _batch(5, 4, pad=3)
    logits = model(input_ids=ids, attention_mask=mask).logits
    expected = sum(
        torch.log_softmax(logits[0, t - 1], -1)[ids[0, t]] for t in range(5, 9)
    )
    assert torch.allclose(sequence_logps(logits, labels)[0], expected)


@pytest.mark.parametrize("answer_len", [1, 3, 7])
def test_minor_sft_gradient_equals_sft_at_r0(model, answer_len):
    batch = _batch(6, answer_len)
    g_sft, _ = _grad(model, "sft", *batch, r=0.0)
    g_minor, _ = _grad(model, "minor_sft", *batch, r=0.0)
    _assert_close(g_minor, g_sft)


@pytest.mark.parametrize("answer_len", [1, 3, 7])
def test_dpo_sft_gradient_is_beta_m_over_2_times_sft_at_r0(model, answer_len):
    batch = _batch(6, answer_len)
    g_sft, m = _grad(model, "sft", *batch, r=0.0)
    g_dpo, _ = _grad(model, "dpo_sft", *batch, r=0.0)
    assert m == answer_len
    _assert_close(g_dpo, (BETA * m / 2) * g_sft)


@pytest.mark.parametrize("r", [-2.0, 1.0, 5.0, 20.0])
def test_minor_sft_gradient_is_sft_scaled_by_dynamic_coefficient(model, r):
    batch = _batch(4, 5)
    g_sft, _ = _grad(model, "sft", *batch, r=0.0)
    g_minor, _ = _grad(model, "minor_sft", *batch, r=r)
    coef = 2 / (1 + math.exp(BETA * r))
    _assert_close(g_minor, coef * g_sft)


def test_minor_coefficient_is_one_at_r0_and_falls_as_r_rises():
    r = torch.tensor([-1.0, 0.0, 0.5, 2.0, 10.0, 50.0])
    coef = minor_coefficient(r, torch.zeros_like(r), beta=0.5)
    assert coef[1] == pytest.approx(1.0)
    assert torch.all(coef[1:].diff() < 0)
    assert coef[0] > 1 and coef[2] < 1 and coef[-1] < 1e-9


def test_losses_are_finite_at_extreme_ratios():
    lp = torch.tensor([-1e4, -3.0, 0.0])
    ref = torch.tensor([0.0, -3.0, -1e4])
    n = torch.tensor([1.0, 1.0, 1.0])
    # one answer token per sample, so the per-token values are the sequence values
    tokens = TokenLogps(policy=lp, sample=torch.arange(3), ref=torch.tensor([-20.0, -3.0, -50.0]))
    for name, fn in LOSSES.items():
        assert torch.isfinite(fn(lp, ref, n, 0.5, tokens=tokens)).all(), name


def test_m_theta_is_ratio_per_answer_token():
    lp = torch.tensor([-2.0, -10.0])
    ref = torch.tensor([-6.0, -10.0])
    assert m_theta(lp, ref, torch.tensor([2.0, 5.0])).tolist() == [2.0, 0.0]


def _token_logps_and_grads(model, ids, labels, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each answer token's log-prob l_t and its own gradient ∇l_t, one backward pass per token."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    tokens = token_logps(logits[answer_mask(labels)], answer_targets(labels))
    grads = []
    for t in range(len(tokens)):
        model.zero_grad()
        tokens[t].backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    return tokens.detach(), grads


def _token_loss_grad(model, method: str, ids, labels, mask, coef, ref_shift: torch.Tensor | None) -> torch.Tensor:
    """Gradient of `method`'s loss for one sample whose reference per-token log-probs are l_t - ref_shift_t."""
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    keep = answer_mask(labels)
    tokens = token_logps(logits[keep], answer_targets(labels))
    lp = tokens.sum().reshape(1)
    ref_tokens = None if ref_shift is None else tokens.detach() - ref_shift
    ref = lp.detach() if ref_tokens is None else ref_tokens.sum().reshape(1)
    inputs = TokenLogps(policy=tokens, sample=torch.zeros(len(tokens), dtype=torch.long), ref=ref_tokens)
    n = torch.tensor([float(len(tokens))], dtype=lp.dtype)
    LOSSES[method](lp, ref, n, coef, tokens=inputs).mean().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).clone()


def test_dft_gradient_is_sft_with_each_token_weighted_by_its_probability(model):
    batch = _batch(5, 4)
    logps, g = _token_logps_and_grads(model, *batch)
    expected = -sum(math.exp(float(lp)) * g_t for lp, g_t in zip(logps, g, strict=True)) / len(logps)
    _assert_close(_token_loss_grad(model, "dft", *batch, None, None), expected)
    # and raw SFT is the same sum with every weight 1
    _assert_close(_token_loss_grad(model, "sft", *batch, None, None), -sum(g) / len(logps))


def test_dft_loss_value_weights_token_nll_by_probability():
    policy = torch.log(torch.tensor([0.5, 0.25, 0.9]))  # sample 0: tokens 0, 1; sample 1: token 2
    tokens = TokenLogps(policy=policy, sample=torch.tensor([0, 0, 1]))
    loss = LOSSES["dft"](None, None, torch.tensor([2.0, 1.0]), None, tokens=tokens)
    expected = [-(0.5 * math.log(0.5) + 0.25 * math.log(0.25)) / 2, -0.9 * math.log(0.9)]
    assert loss.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("answer_len", [1, 4])
def test_kl_sft_is_sft_at_lambda_zero_and_at_the_reference(model, answer_len):
    batch = _batch(6, answer_len)
    g_sft = _token_loss_grad(model, "sft", *batch, None, None)
    away = torch.linspace(-2.0, 3.0, answer_len, dtype=torch.float64)  # a policy far from its reference
    _assert_close(_token_loss_grad(model, "kl_sft", *batch, 0.0, away), g_sft)  # λ = 0
    at_ref = torch.zeros(answer_len, dtype=torch.float64)  # step 0: policy = reference
    _assert_close(_token_loss_grad(model, "kl_sft", *batch, 0.7, at_ref), g_sft)


def test_kl_sft_gradient_pulls_each_token_back_to_the_reference(model):
    batch, lam = _batch(5, 3), 0.7
    _, g = _token_logps_and_grads(model, *batch)
    shift = torch.tensor([1.5, -0.5, 0.2], dtype=torch.float64)  # l_t - log π_ref(y_t)
    # d/dl [exp(ref - l) - (ref - l) - 1] = 1 - exp(ref - l) = 1 - exp(-shift)
    expected = -sum(g) / 3 + lam * sum((1 - math.exp(-float(d))) * g_t for d, g_t in zip(shift, g, strict=True)) / 3
    _assert_close(_token_loss_grad(model, "kl_sft", *batch, lam, shift), expected)


def test_kl_sft_penalty_is_never_negative():
    policy = torch.tensor([-1.0, -2.0, -0.1, -5.0])
    ref = torch.tensor([-3.0, -0.5, -0.1, -5.0])
    tokens = TokenLogps(policy=policy, sample=torch.tensor([0, 0, 1, 1]), ref=ref)
    n = torch.tensor([2.0, 2.0])
    lp = torch.tensor([-3.0, -5.1])
    penalty = LOSSES["kl_sft"](lp, None, n, 1.0, tokens=tokens) - LOSSES["sft"](lp, None, n, None)
    assert penalty[0] > 0 and penalty[1] == pytest.approx(0.0)


def test_every_method_files_loss_is_the_function_the_trainer_calls():
    """conf/method/<name>.yaml names its loss by import path; LOSSES holds exactly those functions."""
    from trainers.runtime.methods import METHODS

    assert set(LOSSES) == set(METHODS)
    for name, method in METHODS.items():
        imported = f"{LOSSES[name].__module__}.{LOSSES[name].__name__}"
        assert imported == method.loss == f"trainers.model.losses.{name}_loss"