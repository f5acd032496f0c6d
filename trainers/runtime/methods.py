"""The methods a run may name, each described once, in its own conf/method/<name>.yaml: how a sweep expands it,
what a job prepares for its loss, and how a report shows it.

A method's file holds its name, its default `beta` (a number: the method takes a coefficient and a grid runs it
once per β; null: it takes none) and a `spec:` block, read here and by nothing else:

    spec:
      display: MinorSFT                                 # the report's and the plots' name
      loss: trainers.model.losses.minor_sft_loss        # the loss function, by its import path
      reads_reference: true                             # and the other flags of `Method` below (default false)

So a new loss is its function and its yaml file. This module imports nothing heavy (PyYAML), so the sweeper
checks a grid, and the report names a method, without loading torch; `trainers.model.losses.LOSSES` imports the
functions. The spec is not a setting: it is left out of a job's config hash, and a job whose `method.spec`
differs from its file's is refused (`spec_error`). `method.beta` is each method's coefficient: β for dpo_sft
and minor_sft, λ (the KL weight) for kl_sft.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

METHOD_DIR = Path(__file__).resolve().parents[2] / "conf" / "method"


@dataclass(frozen=True)
class Method:
    name: str  # the conf name: conf/method/<name>.yaml, result.json's "method"
    display: str  # the report's and the plots' name
    loss: str  # the loss function's import path (module.function)
    takes_beta: bool = False  # the file's `beta` is a number: a grid runs it once per β, not once per learning rate
    beta_may_be_zero: bool = False  # a coefficient of 0 is allowed (kl_sft at λ = 0 is raw SFT); else β > 0
    reads_reference: bool = False  # the loss reads the reference's log-probs (m_theta tracking needs them anyway)
    reads_tokens: bool = False  # the loss reads per-token log-probs (`TokenLogps`), not only sums
    reads_reference_tokens: bool = False  # ... the reference's per-token log-probs too
    logs_minor_coefficient: bool = False  # the loss weights SFT's gradient by 2σ(-βr) per sample: its mean is logged


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(Method) if f.name not in ("name", "takes_beta"))


def method_from(conf: dict[str, Any], where: str) -> Method:
    """The `Method` a method config describes (a conf/method file's content, or a job's `method`); `where` names
    it in the error a malformed one raises."""
    spec = conf.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: no spec: block (display, loss and the flags of trainers/runtime/methods.py)")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    missing = [key for key in ("display", "loss") if not spec.get(key)]
    if unknown or missing:
        raise ValueError(f"{where}: spec has unknown key(s) {unknown} or lacks {missing}; "
                         f"its keys are {', '.join(SPEC_FIELDS)}")
    return Method(name=str(conf.get("name")), takes_beta=conf.get("beta") is not None, **spec)


def _read_methods(directory: Path) -> dict[str, Method]:
    methods = {}
    for path in sorted(directory.glob("*.yaml")):
        method = method_from(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))
        if method.name != path.stem:
            raise ValueError(f"{path}: name: {method.name} must be the file's name, {path.stem}")
        methods[method.name] = method
    return methods


METHODS: dict[str, Method] = _read_methods(METHOD_DIR)

BETA_METHODS: frozenset[str] = frozenset(name for name, method in METHODS.items() if method.takes_beta)


def spec_error(conf: dict[str, Any]) -> str | None:
    """Why a job's `method` config does not describe the method its file does, or None (no spec: nothing to
    compare; a command line that overrode `method.spec.*` would otherwise run one method and record another)."""
    if conf.get("spec") is None:
        return None
    name = conf.get("name")
    try:
        described = method_from(conf, f"method={name}")
    except ValueError as exc:
        return str(exc)
    if dataclasses.replace(described, takes_beta=METHODS[name].takes_beta) != METHODS[name]:
        return (f"method.spec is not what conf/method/{name}.yaml says {name} is; the spec describes the "
                f"method and is not a setting: drop the method.spec override (a new method is a new file in "
                f"conf/method/)")
    return None


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
