"""One place that turns a multiple-choice item into token ids: prompt, answer, loss mask.

Training, the reference pass and evaluation all read the samples made here, so the answer
position used for the letter logits is by construction the first token the loss trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from trainers.data.mcq import OPTION_LETTERS, DataError, McqItem

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptFormat:
    """How a dataset's items are rendered (from conf/data/*.yaml)."""

    prompt_template: str
    answer_template: str = "{answer}"
    system_prompt: str | None = None
    max_length: int = 512
    use_chat_template: bool = True


@dataclass(frozen=True)
class Sample:
    """One tokenized item. `gold` indexes OPTION_LETTERS; `n_tokens` is m, the answer length."""

    id: str
    subject: str
    input_ids: list[int]
    prompt_len: int
    gold: int

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_len


def letter_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The single token of each option letter, as it starts an answer."""
    ids = []
    for letter in OPTION_LETTERS:
        tokens = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise DataError(
                f"tokenizer splits option letter {letter!r} into {len(tokens)} tokens; "
                "multiple-choice scoring needs one token per letter (use another tokenizer)"
            )
        ids.append(tokens[0])
    return ids


def render_prompt(item: McqItem, fmt: PromptFormat, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text before the answer: chat template when the tokenizer has one, else the plain template."""
    user = fmt.prompt_template.format(question=item.question, **item.options)
    if fmt.use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{fmt.system_prompt}\n{user}" if fmt.system_prompt else user


def answer_rest(item: McqItem, fmt: PromptFormat) -> str:
    """The answer text after its leading letter (empty when the item has no explanation)."""
    if not item.explanation:
        return ""
    text = fmt.answer_template.format(answer=item.answer, explanation=item.explanation)
    if not text.startswith(item.answer):
        raise DataError(f"data.answer_template must start with {{answer}}, got {fmt.answer_template!r}")
    return text[len(item.answer) :]


def encode_items(
    items: Sequence[McqItem], fmt: PromptFormat, tokenizer: PreTrainedTokenizerBase
) -> list[Sample]:
    """Tokenize items; answers are the letter token, the rest of the answer, then eos.

    The letter is tokenized on its own so that it is exactly the token whose logit evaluation
    reads. Answers too long for `max_length` are cut (counted); items whose prompt alone does
    not fit are left out and counted — never silently.
    """
    letters = letter_token_ids(tokenizer)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    samples, cut, too_long = [], 0, []
    for item in items:
        prompt = tokenizer(render_prompt(item, fmt, tokenizer), add_special_tokens=False)["input_ids"]
        gold = OPTION_LETTERS.index(item.answer)
        rest = tokenizer(answer_rest(item, fmt), add_special_tokens=False)["input_ids"]
        answer = [letters[gold], *rest, *eos]
        if len(prompt) + 1 > fmt.max_length:
            too_long.append(item.id)
            continue
        if len(prompt) + len(answer) > fmt.max_length:
            answer = answer[: fmt.max_length - len(prompt)]
            cut += 1
        samples.append(Sample(item.id, item.subject, prompt + answer, len(prompt), gold))
    if cut:
        log.warning("cut the answer of %d of %d items to data.max_length=%d", cut, len(items), fmt.max_length)
    if too_long:
        log.warning(
            "left out %d of %d items whose prompt exceeds data.max_length=%d (e.g. id %s); raise data.max_length",
            len(too_long), len(items), fmt.max_length, too_long[0],
        )
    if not samples:
        raise DataError(f"no item fits data.max_length={fmt.max_length}; raise data.max_length")
    return samples
