"""SFT losses compared by the MinorSFT paper (arXiv:2408.10642), and its deviation metric m_theta.

Every loss works on sequence-level quantities of the answer tokens only:

    lp      = sum_t log pi_theta(y_t | x, y_<t)     policy log-prob of the answer
    lp_ref  = the same under the frozen reference   (precomputed once, see trainers/reference.py)
    m       = number of answer tokens
    r       = lp - lp_ref

and returns one loss per sample; the batch loss is their mean. A new method is one function
registered in LOSSES plus one YAML file in conf/method/.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainers.logprobs import answer_mask, answer_targets, sum_per_sample, token_logps

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | None], torch.Tensor]


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Sum of log-probs of the labelled tokens per sequence, from full `[batch, length, vocab]` logits.

    `labels` is aligned with the input ids (prompt and padding set to `ignore_index`); the shift
    by one (logits at t predict token t+1) happens here. Training and scoring do not build the full
    logits at all (`trainers.logprobs.answer_logps`); this is the same computation for callers that
    already hold them, and the reference the lean path is tested against.
    """
    keep = answer_mask(labels, ignore_index)
    return sum_per_sample(token_logps(logits[keep], answer_targets(labels, ignore_index)), keep)


def sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None
) -> torch.Tensor:
    """Raw SFT: mean token negative log-likelihood of the answer, -lp/m. Needs no reference."""
    del ref_logps, beta
    return -policy_logps / n_tokens


def dpo_sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None
) -> torch.Tensor:
    """"SFT using DPO": DPO with the chosen answer only, -log sigma(beta * r)."""
    del n_tokens
    return -F.logsigmoid(beta * (policy_logps - ref_logps))


def minor_sft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float | None
) -> torch.Tensor:
    """MinorSFT: -(2 / (beta m)) log sigma(beta r).

    Its gradient is -(2/m) sigma(-beta r) grad lp: raw SFT's gradient times the sample-level
    coefficient 2 sigma(-beta r), which is 1 at r = 0 and falls as the policy moves away.
    """
    return -(2.0 / (beta * n_tokens)) * F.logsigmoid(beta * (policy_logps - ref_logps))


def m_theta(policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The paper's deviation metric per sample: r / m (beta and answer length normalised away)."""
    return (policy_logps - ref_logps) / n_tokens


def minor_coefficient(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """MinorSFT's per-sample gradient weight relative to raw SFT, 2 sigma(-beta r)."""
    return 2.0 * torch.sigmoid(-beta * (policy_logps - ref_logps))


LOSSES: dict[str, LossFn] = {
    "sft": sft_loss,
    "dpo_sft": dpo_sft_loss,
    "minor_sft": minor_sft_loss,
}

# Methods whose loss reads beta; the others must run once per learning rate, not once per beta.
BETA_METHODS: frozenset[str] = frozenset({"dpo_sft", "minor_sft"})
# Methods whose loss reads the reference log-probs (m_theta tracking needs them for every method).
REFERENCE_METHODS: frozenset[str] = frozenset({"dpo_sft", "minor_sft"})
