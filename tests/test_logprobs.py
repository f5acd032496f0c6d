"""Answer-only logits give the numbers of the full-logits path, and the LM head never sees the prompt.

Checked on Llama and Qwen2 built from configs, with LoRA adapters, through DDP and FSDP2 over gloo
(one process), and for a model whose forward has no `logits_to_keep` (the full-logits fallback).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from trainers.data.batching import collate
from trainers.data.prompts import Sample
from trainers.model.logprobs import answer_logps, supports_kept_logits
from trainers.model.losses import sequence_logps
from trainers.model.scoring import score_samples

VOCAB, PAD = 300, 0
LETTERS = [11, 12, 13, 14]


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=PAD,
    ))


def _qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=PAD,
    ))


def _samples() -> list[Sample]:
    """Prompts and answers of different lengths, so rows pad differently and answers start at different places."""
    g = torch.Generator().manual_seed(0)
    shapes = [(9, 1), (5, 6), (14, 3), (7, 2), (11, 8)]
    out = []
    for i, (prompt_len, m) in enumerate(shapes):
        ids = torch.randint(20, VOCAB, (prompt_len + m,), generator=g).tolist()
        ids[prompt_len] = LETTERS[i % 4]
        out.append(Sample(id=str(i), subject="", input_ids=ids, prompt_len=prompt_len, gold=i % 4))
    return out


class _NoKeepArgument(nn.Module):
    """A causal LM whose forward takes no `logits_to_keep` (older or custom architectures)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("build", [_llama, _qwen2], ids=["llama", "qwen2"])
def test_answer_logps_equal_the_full_logits_path(build) -> None:
    model = build().eval()
    batch = collate(_samples(), PAD)
    full = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"])
    lean, tokens, logits = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert supports_kept_logits(model)
    n_answer = int(batch["n_tokens"].sum())
    assert logits.shape == (n_answer, VOCAB) and tokens.shape == (n_answer,)
    torch.testing.assert_close(lean, full, rtol=0, atol=1e-5)


def test_the_head_runs_on_answer_positions_only() -> None:
    model = _llama().eval()
    batch = collate(_samples(), PAD)
    rows_seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: rows_seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    finally:
        hook.remove()
    assert rows_seen == [int(batch["n_tokens"].sum())]  # 20 rows, not 5 x 22 positions


def test_gradients_equal_the_full_logits_path() -> None:
    batch = collate(_samples(), PAD)
    grads = []
    for lean in (False, True):
        model = _qwen2()
        if lean:
            lp = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            lp = sequence_logps(logits, batch["labels"])
        (-(lp / batch["n_tokens"]).mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_models_without_the_argument_fall_back_to_full_logits() -> None:
    inner = _llama().eval()
    wrapped = _NoKeepArgument(inner)
    batch = collate(_samples(), PAD)
    assert not supports_kept_logits(wrapped)
    expected = answer_logps(inner, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    actual = answer_logps(wrapped, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_lora_model_keeps_the_lean_path() -> None:
    import peft  # a dev dependency: `make test` installs it, so its absence fails
    model = peft.get_peft_model(_llama(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          task_type="CAUSAL_LM")).eval()
    batch = collate(_samples(), PAD)
    full = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"])
    assert supports_kept_logits(model)
    lean = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    torch.testing.assert_close(lean, full, rtol=0, atol=1e-5)


def _full_logits_scores(model: nn.Module, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """What the evaluator computed before answer-only logits: full logits, one batch."""
    batch = collate(samples, PAD)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows = torch.arange(len(samples))
    preds = logits[rows, batch["answer_pos"]][:, LETTERS].argmax(-1)
    return sequence_logps(logits, batch["labels"]), preds


@pytest.mark.parametrize("with_logps", [True, False])
def test_scoring_equals_the_full_logits_path(with_logps: bool) -> None:
    model = _qwen2()
    samples = _samples()
    logps, preds = _full_logits_scores(model, samples)
    scores = score_samples(model, samples, LETTERS, PAD, batch_size=2, with_logps=with_logps)
    assert torch.equal(scores.preds, preds)
    if with_logps:
        torch.testing.assert_close(scores.logps, logps, rtol=0, atol=1e-5)
    else:
        assert torch.isnan(scores.logps).all()


@pytest.fixture
def gloo_group() -> Iterator[None]:
    """A one-process gloo group, as torchrun would set up, torn down afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_model_computes_the_same(gloo_group) -> None:
    model = _llama()
    batch = collate(_samples(), PAD)
    expected = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0].detach()
    ddp = nn.parallel.DistributedDataParallel(model)
    assert supports_kept_logits(ddp)
    lp = answer_logps(ddp, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    torch.testing.assert_close(lp.detach(), expected, rtol=0, atol=1e-6)
    lp.sum().backward()  # DDP's reducer saw the forward: its backward hooks run
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fsdp2_sharded_model_computes_the_same(gloo_group) -> None:
    from torch.distributed.fsdp import fully_shard

    model = _llama()
    batch = collate(_samples(), PAD)
    expected = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0].detach()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    assert supports_kept_logits(model)
    lp = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    torch.testing.assert_close(lp.detach(), expected, rtol=0, atol=1e-6)
