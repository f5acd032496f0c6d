"""Answer log-probs from logits computed only where they are read.

A causal LM's `lm_head` maps every position to the vocabulary, but this tool reads the logits at
the answer positions only (training, the reference pass and m_theta) and at one position per
question (the option letters). With Qwen2's 151,936-token vocabulary and prompts of hundreds of
tokens, the full `[batch, length, vocab]` tensor is gigabytes and the head's matmul a quarter of a
small model's FLOPs. The models' own `logits_to_keep` argument, given a boolean `[batch, length]`
mask, applies the head to the kept positions only and returns them flattened, `[n_kept, vocab]`,
in row-major order; going through the model's `forward` (not its submodules) keeps DDP, FSDP,
DeepSpeed and LoRA wrappers in charge. Models without that argument fall back to full logits,
sliced to the same positions, so every caller sees the same numbers either way.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from trainers.data.prompts import IGNORE_INDEX


def answer_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Bool `[batch, length]`: positions whose logits predict a labelled (answer) token.

    Logits at position t predict token t+1, so this is the label mask shifted left by one; the last
    position predicts nothing.
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != ignore_index
    return keep


def answer_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The labelled tokens, flattened in the same row-major order as the kept logits."""
    targets = labels[:, 1:]
    return targets[targets != ignore_index]


def token_logps(kept_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-prob of each target under its row of logits, in float32 or wider (bf16 log-softmax loses digits)."""
    logits = kept_logits.to(torch.promote_types(kept_logits.dtype, torch.float32))
    return logits.log_softmax(dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)


def sum_per_sample(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Sum the flattened per-position `values` back into one number per row of `keep`."""
    rows = torch.arange(keep.shape[0], device=keep.device).unsqueeze(1).expand_as(keep)[keep]
    return torch.zeros(keep.shape[0], dtype=values.dtype, device=values.device).index_add(0, rows, values)


def _core_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP/FSDP/compile (`.module`, `._orig_mod`) and PEFT wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
    return model


def _slicer_takes_masks() -> bool:
    """Whether this transformers release's `slice_logits_to_keep` accepts a boolean 2-D mask."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    hidden = torch.arange(6.0).reshape(1, 3, 2)
    try:
        out = slice_logits_to_keep(hidden, torch.tensor([[True, False, True]]))
    except Exception:  # an older release indexing with the mask as positions
        return False
    return out.shape == (2, 2) and bool((out == hidden[0, [0, 2]]).all())


_MASK_SLICING = _slicer_takes_masks()


def supports_kept_logits(model: nn.Module) -> bool:
    """True when `model(..., logits_to_keep=<bool mask>)` computes only the kept positions."""
    core = _core_model(model)
    cached = getattr(core, "_sftsweep_kept_logits", None)
    if cached is None:
        cached = _MASK_SLICING and "logits_to_keep" in inspect.signature(core.forward).parameters
        try:
            core._sftsweep_kept_logits = cached
        except AttributeError:
            pass
    return cached


def kept_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Logits at the `keep` positions only, `[n_kept, vocab]`, row-major (the order of `tensor[keep]`)."""
    if supports_kept_logits(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
        if logits.dim() == 2:
            return logits
        # Its forward takes the argument but slices in its own way: full logits from now on (one wasted pass).
        _core_model(model)._sftsweep_kept_logits = False
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[keep]


def answer_logps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sequence log-probs `[B]`, per-token log-probs `[n_answer_tokens]`, kept logits) of the labelled answers.

    The per-token values are flattened in row-major order; `sum_per_sample(tokens, answer_mask(labels))`
    gives the sequence values back.
    """
    keep = answer_mask(labels)
    logits = kept_logits(model, input_ids, attention_mask, keep)
    tokens = token_logps(logits, answer_targets(labels))
    return sum_per_sample(tokens, keep), tokens, logits
