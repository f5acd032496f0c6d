"""SFT losses compared by the MinorSFT paper (arXiv:2408.10642), and its deviation metric m_theta.

Every loss works on sequence-level quantities of the answer tokens only:

    lp      = sum_t log pi_theta(y_t | x, y_<t)     policy log-prob of the answer
    lp_ref  = the same under the frozen reference   (precomputed once, see trainers/model/reference.py)
    m       = number of answer tokens
    r       = lp - lp_ref

and returns one loss per sample; the batch loss is their mean. A new method is one function
and one YAML file in conf/method/ that names it and says what it reads, whether it takes β and its display name
(trainers/runtime/methods.py); LOSSES maps each method to its function.

Token-level losses (DFT, KL-regularised SFT) also read the answer's per-token log-probs, passed
as `tokens` (`TokenLogps`); the sequence-level losses ignore it. `method.beta` is each method's
coefficient: β for dpo_sft and minor_sft, λ (the KL weight) for kl_sft.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.model.logprobs import answer_mask, answer_targets, sum_per_sample, token_logps
from trainers.runtime.methods import METHODS, Method


@dataclass(frozen=True)
class TokenLogps:
    """Per-token log-probs of the answer tokens of a batch, flattened in row-major order."""

    policy: torch.Tensor  # [N] log π_θ(y_t | x, y_<t)
    sample: torch.Tensor  # [N] long: the batch row each token belongs to
    ref: torch.Tensor | None = None  # [N] the same under the reference (cached), when the method needs it

    def per_sample_sum(self, values: torch.Tensor, n_samples: int) -> torch.Tensor:
        return torch.zeros(n_samples, dtype=values.dtype, device=values.device).index_add(0, self.sample, values)


# loss_fn(policy_logps, ref_logps, n_tokens, beta, tokens=None) -> per-sample loss [B]
LossFn = Callable[..., torch.Tensor]


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Sum of log-probs of the labelled tokens per sequence, from full `[batch, length, vocab]` logits.

    `labels` is aligned with the input ids (prompt and padding set to `ignore_index`); the shift
    by one (logits at t predict token t+1) happens here. Training and scoring do not build the full
    logits at all (`trainers.model.logprobs.answer_logps`); this is the same computation for callers that
    already hold them, and the reference the lean path is tested against.
    """
    keep = answer_mask(labels, ignore_index)
    return sum_per_sample(token_logps(logits[keep], answer_targets(labels, ignore_index)), keep)


def sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None,
    tokens: TokenLogps | None = None,
) -> torch.Tensor:
    """Raw SFT: mean token negative log-likelihood of the answer, -lp/m. Needs no reference."""
    del ref_logps, beta, tokens
    return -policy_logps / n_tokens


def dpo_sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None,
    tokens: TokenLogps | None = None,
) -> torch.Tensor:
    """"SFT using DPO": DPO with the chosen answer only, -log sigma(beta * r)."""
    del n_tokens, tokens
    return -F.logsigmoid(beta * (policy_logps - ref_logps))


def minor_sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None,
    tokens: TokenLogps | None = None,
) -> torch.Tensor:
    """MinorSFT: -(2 / (beta m)) log sigma(beta r).

    Its gradient is -(2/m) sigma(-beta r) grad lp: raw SFT's gradient times the sample-level
    coefficient 2 sigma(-beta r), which is 1 at r = 0 and falls as the policy moves away.
    """
    del tokens
    return -(2.0 / (beta * n_tokens)) * F.logsigmoid(beta * (policy_logps - ref_logps))


def dft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None,
    tokens: TokenLogps | None = None,
) -> torch.Tensor:
    """Dynamic Fine-Tuning (Wu et al. 2025, TRL's loss_type="dft"): -(1/m) Σ_t sg(p_t) log p_t.

    Each answer token's NLL is weighted by its own probability, held constant (stop-gradient): the
    gradient is raw SFT's with token t scaled by p_t, so tokens the model finds unlikely pull less.
    """
    del ref_logps, beta
    weights = tokens.policy.detach().exp()
    return -tokens.per_sample_sum(weights * tokens.policy, len(n_tokens)) / n_tokens


KL_LOG_RATIO_CAP = 20.0


def kl_sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None,
    tokens: TokenLogps | None = None,
) -> torch.Tensor:
    """KL-regularised SFT: -lp/m + λ · (1/m) Σ_t k3_t, with λ = `beta` (method.beta).

    k3_t = exp(d_t) - d_t - 1 with d_t = log π_ref(y_t) - log π_θ(y_t) on the answer tokens (Schulman's
    k3 estimator of KL(π_θ || π_ref), as in GRPO): never negative, exactly 0 with zero gradient where
    the policy equals the reference, so at step 0 and at λ = 0 this is raw SFT; away from the
    reference it pulls each token back by λ(1 - π_ref/π_θ)/m. Only the data's answer tokens are
    scored (one cached reference log-prob per token), not the whole vocabulary. d_t is capped at
    KL_LOG_RATIO_CAP nats, past which exp(d_t) would overflow: a token whose probability the policy
    has cut by more than e^20 against the reference adds a finite penalty with no pull of its own
    (raw SFT's term still pulls it up).
    """
    delta = (tokens.ref - tokens.policy).clamp(max=KL_LOG_RATIO_CAP)
    k3 = torch.expm1(delta) - delta
    return -policy_logps / n_tokens + beta * tokens.per_sample_sum(k3, len(n_tokens)) / n_tokens


def m_theta(policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The paper's deviation metric per sample: r / m (beta and answer length normalised away)."""
    return (policy_logps - ref_logps) / n_tokens


def minor_coefficient(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """MinorSFT's per-sample gradient weight relative to raw SFT, 2 sigma(-beta r)."""
    return 2.0 * torch.sigmoid(-beta * (policy_logps - ref_logps))


def _loss_function(method: Method) -> LossFn:
    """The function a method's spec names (`spec.loss`, module.function), imported."""
    module, _, name = method.loss.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"conf/method/{method.name}.yaml: spec.loss={method.loss} cannot be imported ({exc}); "
                         "name a function as module.function, e.g. trainers.model.losses.sft_loss") from exc


LOSSES: dict[str, LossFn] = {name: _loss_function(method) for name, method in METHODS.items()}
