"""Row 4: our evaluator (one forward pass per question) against scoring every option on its own.

The naive baseline is lm-evaluation-harness's `multiple_choice` rule written out without its
logits cache: for each question and each option, the request (context = the prompt, continuation
= " A" / " B" / ...) gets its own sequence, the model runs on (context + continuation)[:-1], the
continuation's token log-probs are summed, and the prediction is the argmax over options (the
`acc` metric; `lm_eval/api/task.py`, `process_results`). Requests are batched with the same batch
size as ours, longest first as lm-eval orders them, so the ratio is the saving of the method,
not of batching.

When `lm_eval` is installed (it is optional: `pip install lm_eval`), the same prompts also go
through its own `HFLM.loglikelihood`, and its argmax must agree question by question.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from bench.setup import BenchData
from bench.timing import interleave, min_ratio, paired_ratio, spread
from trainers.data.mcq import OPTION_LETTERS
from trainers.data.prompts import IGNORE_INDEX, Sample, render_prompt
from trainers.model.scoring import score_samples


def _requests(samples: Sequence[Sample], letter_ids: Sequence[int]) -> list[tuple[int, int, list[int], list[int]]]:
    """(question, option, context ids, continuation ids) for every option of every question."""
    return [
        (q, k, s.input_ids[: s.prompt_len], [letter])
        for q, s in enumerate(samples)
        for k, letter in enumerate(letter_ids)
    ]


@torch.no_grad()
def naive_option_logliks(
    model: PreTrainedModel, samples: Sequence[Sample], letter_ids: Sequence[int], pad_id: int, batch_size: int
) -> torch.Tensor:
    """[questions, options] summed continuation log-probs, one sequence per (question, option)."""
    model.eval()
    requests = sorted(_requests(samples, letter_ids), key=lambda r: -(len(r[2]) + len(r[3])))
    out = torch.empty(len(samples), len(letter_ids), dtype=torch.float32)
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        inputs = [(ctx + cont)[:-1] for _, _, ctx, cont in chunk]
        width = max(len(x) for x in inputs)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        targets = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, ((_, _, ctx, cont), x) in enumerate(zip(chunk, inputs, strict=True)):
            input_ids[row, : len(x)] = torch.tensor(x)
            attention_mask[row, : len(x)] = 1
            targets[row, len(ctx) - 1 : len(ctx) - 1 + len(cont)] = torch.tensor(cont)
        logps = model(input_ids=input_ids, attention_mask=attention_mask).logits.float().log_softmax(-1)
        mask = targets != IGNORE_INDEX
        token_logps = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        for row, (q, k, _, _) in enumerate(chunk):
            out[q, k] = token_logps[row].sum()
    return out


def lm_eval_logliks(model: PreTrainedModel, data: BenchData, batch_size: int) -> torch.Tensor | None:
    """The same requests through lm-evaluation-harness's `HFLM.loglikelihood`; None when it is not installed."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        return None
    lm = HFLM(pretrained=model, tokenizer=data.tokenizer, backend="causal", device="cpu", batch_size=batch_size)
    requests = [
        Instance("loglikelihood", {}, (render_prompt(item, data.fmt, data.tokenizer), f" {letter}"), idx)
        for item in data.eval_items
        for idx, letter in enumerate(OPTION_LETTERS)
    ]
    results = lm.loglikelihood(requests, disable_tqdm=True)
    return torch.tensor([ll for ll, _ in results], dtype=torch.float32).view(len(data.eval_items), len(OPTION_LETTERS))


def measure_eval(model: PreTrainedModel, data: BenchData, n_questions: int | None, reps: int) -> dict[str, Any]:
    """Throughput of both evaluators (interleaved) and their question-by-question agreement."""
    samples = data.eval_samples[:n_questions] if n_questions else data.eval_samples
    batch_size = int(data.cfg.train.eval_batch_size)
    last: dict[str, Any] = {}

    def ours() -> list[float]:
        """The choice alone, as the naive way gives it: one prompt-only pass per question."""
        began = time.perf_counter()
        last["ours"] = score_samples(model, samples, data.letters, data.pad_id, batch_size, with_logps=False).preds
        return [time.perf_counter() - began]

    def ours_with_m_theta() -> list[float]:
        """What training-time evaluation runs: choice and answer log-prob (eval m_theta) in one pass."""
        began = time.perf_counter()
        last["ours_full"] = score_samples(model, samples, data.letters, data.pad_id, batch_size).preds
        return [time.perf_counter() - began]

    def naive() -> list[float]:
        began = time.perf_counter()
        last["naive"] = naive_option_logliks(model, samples, data.letters, data.pad_id, batch_size)
        return [time.perf_counter() - began]

    timings = interleave({"ours": ours, "ours_full": ours_with_m_theta, "naive": naive}, reps)
    gold = torch.tensor([s.gold for s in samples])
    ours_pred, naive_pred = last["ours"], last["naive"].argmax(-1)
    low, high = spread(timings["naive"], timings["ours"])
    result = {
        "n_questions": len(samples),
        "n_options": len(data.letters),
        "batch_size": batch_size,
        "reps": reps,
        "ours_questions_per_s": len(samples) / min(t[0] for t in timings["ours"]),
        "naive_questions_per_s": len(samples) / min(t[0] for t in timings["naive"]),
        "ratio": paired_ratio(timings["naive"], timings["ours"]),
        "min": low,
        "max": high,
        "fastest_step_ratio": min_ratio(timings["naive"], timings["ours"]),
        # with eval m_theta: ours is one prompt+answer pass, the naive way needs that pass on top
        "with_m_theta_ratio": paired_ratio(
            [[n[0] + o[0]] for n, o in zip(timings["naive"], timings["ours_full"], strict=True)], timings["ours_full"]
        ),
        "ours_with_m_theta_questions_per_s": len(samples) / min(t[0] for t in timings["ours_full"]),
        "agree_with_m_theta_pass": int((last["ours_full"] == ours_pred).sum()),
        "accuracy_ours": float((ours_pred == gold).float().mean()),
        "accuracy_naive": float((naive_pred == gold).float().mean()),
        "agree": int((ours_pred == naive_pred).sum()),
        # compute bound on the ratio: tokens the naive way feeds / tokens we feed
        "token_ratio": len(data.letters) * sum(s.prompt_len for s in samples) / sum(len(s.input_ids) for s in samples),
    }
    result["predictions_agree"] = result["agree"] == len(samples)
    result["lm_eval"] = _lm_eval_check(model, data, samples, ours_pred, last["naive"], batch_size)
    return result


def _lm_eval_check(
    model: PreTrainedModel, data: BenchData, samples: Sequence[Sample], ours_pred: torch.Tensor,
    naive_logliks: torch.Tensor, batch_size: int,
) -> dict[str, Any]:
    """lm-eval's own argmax on the same prompts, when lm_eval is importable; also how far its
    log-likelihoods are from the naive baseline's (which claims to be its rule)."""
    subset = dataclasses.replace(data, eval_items=data.eval_items[: len(samples)])
    logliks = lm_eval_logliks(model, subset, batch_size)
    if logliks is None:
        return {"checked": False, "why": "lm_eval not installed (optional: pip install lm_eval)"}
    import lm_eval

    preds = logliks.argmax(-1)
    return {
        "checked": True,
        "version": lm_eval.__version__,
        "agree": int((preds == ours_pred).sum()),
        "predictions_agree": bool((preds == ours_pred).all()),
        "n_questions": len(samples),
        "max_abs_loglik_diff_vs_naive": float((logliks - naive_logliks).abs().max()),
    }
