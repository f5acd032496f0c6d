"""The methods a run may name, each described once: how a sweep expands it, what a job prepares for its loss,
and how a report shows it.

The loss itself is `trainers.model.losses.LOSSES[name]` (torch code). This module imports nothing heavy, so
the sweeper checks a grid, and the report names a method, without loading torch. `method.beta` is each
method's coefficient: β for dpo_sft and minor_sft, λ (the KL weight) for kl_sft.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str  # the conf name: conf/method/<name>.yaml, result.json's "method"
    display: str  # the report's and the plots' name
    takes_beta: bool = False  # the loss reads method.beta: a grid runs it once per β, not once per learning rate
    beta_may_be_zero: bool = False  # a coefficient of 0 is allowed (kl_sft at λ = 0 is raw SFT); else β > 0
    reads_reference: bool = False  # the loss reads the reference's log-probs (m_theta tracking needs them anyway)
    reads_tokens: bool = False  # the loss reads per-token log-probs (`TokenLogps`), not only sums
    reads_reference_tokens: bool = False  # ... the reference's per-token log-probs too
    logs_minor_coefficient: bool = False  # the loss weights SFT's gradient by 2σ(-βr) per sample: its mean is logged


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "SFT"),
    Method("dpo_sft", "SFT using DPO", takes_beta=True, reads_reference=True, logs_minor_coefficient=True),
    Method("minor_sft", "MinorSFT", takes_beta=True, reads_reference=True, logs_minor_coefficient=True),
    Method("dft", "DFT", reads_tokens=True),
    Method("kl_sft", "KL-regularised SFT", takes_beta=True, beta_may_be_zero=True, reads_reference=True,
           reads_tokens=True, reads_reference_tokens=True),
)}

BETA_METHODS: frozenset[str] = frozenset(name for name, method in METHODS.items() if method.takes_beta)


def beta_error(method: str, beta: object) -> str | None:
    """Why `beta` cannot be `method`'s β, or None: the one rule behind a job's `method.beta` and a grid's β lists
    (a β-free method given a β would rerun the same job per β, or record a β its loss never read)."""
    spec = METHODS[method]
    if not spec.takes_beta:
        return None if beta is None else f"{method} takes no β"
    number = isinstance(beta, (int, float)) and not isinstance(beta, bool) and math.isfinite(beta)
    if spec.beta_may_be_zero:
        return None if number and beta >= 0 else "its coefficient λ must be >= 0"
    return None if number and beta > 0 else "β must be > 0"

