"""A training job over real FinEval files, with a chat-template tokenizer, on a tiny Qwen2 model."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_chat import save_tiny_chat_checkpoint

from conftest import REPO_ROOT
from trainers.data.mcq import load_mcq
from trainers.job.prepare import load_items
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_jsonl

FINEVAL = REPO_ROOT.parent / "shared" / "data" / "fineval"
pytestmark = [pytest.mark.skipif(not FINEVAL.is_dir(), reason=f"FinEval not found at {FINEVAL}"), pytest.mark.slow]

@pytest.fixture(scope="module")
def tiny_chat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained on FinEval's own text and a random tiny Qwen2, saved like a real checkpoint."""
    items, _ = load_mcq(FINEVAL, "val")
    texts = [" ".join([i.question, *i.options.values()]) for i in items[:1500]]
    return save_tiny_chat_checkpoint(tmp_path_factory.mktemp("qwen2-tiny"), texts)


def test_fineval_subset_trains_end_to_end(job_cfg, tiny_chat_checkpoint, tmp_path):
    cfg = job_cfg(
        "data=fineval", f"data.path={FINEVAL}", "data.n_train=48", "data.n_eval=40", "data.max_length=1024",
        f"model.path={tiny_chat_checkpoint}", "model.name=qwen2-tiny", "method=minor_sft", "method.beta=0.1",
    )
    result = run_job(cfg)
    assert result["status"] == "ok" and result["dataset"] == "fineval"
    assert (result["train_n"], result["eval_n"]) == (48, 40)
    predictions = read_jsonl(Path(cfg.run_dir) / "predictions.jsonl")
    assert len(predictions) == 40 and all(p["subject"] for p in predictions)
    assert all(p["id"].startswith(p["subject"] + "/") for p in predictions)
    subjects = {p["subject"] for p in predictions}
    assert set(result["subject_accuracy"]) == subjects
    n_correct = sum(result["subject_accuracy"][s] * sum(p["subject"] == s for p in predictions) for s in subjects)
    assert n_correct == pytest.approx(result["accuracy"] * len(predictions))
    # FinEval's test split is a subset of val: the job must never train on an eval question
    train_items, eval_items = load_items(cfg.data)
    assert {i.question for i in train_items}.isdisjoint({i.question for i in eval_items})
    assert [i.id for i in eval_items] == [p["id"] for p in predictions]
    metrics = read_jsonl(Path(cfg.run_dir) / "metrics.jsonl")
    assert metrics and abs(metrics[0]["m_theta"]) < 1e-4


def test_chat_template_renders_system_prompt_and_generation_prompt(tiny_chat_checkpoint):
    from transformers import AutoTokenizer

    from trainers.data.prompts import PromptFormat, encode_items, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_checkpoint)
    item = load_mcq(FINEVAL, "dev")[0][0]
    fmt = PromptFormat(prompt_template="{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}",
                       system_prompt="You are a financial expert.", answer_template="{answer}\n{explanation}")
    text = render_prompt(item, fmt, tokenizer)
    assert text.startswith("<|im_start|>system\nYou are a financial expert.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n") and item.question in text
    (sample,) = encode_items([item], fmt, tokenizer)
    answer_ids = sample.input_ids[sample.prompt_len:]
    assert answer_ids[0] == tokenizer.convert_tokens_to_ids(item.answer)
    assert answer_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer_ids[1:-1]).strip() == item.explanation.strip()
