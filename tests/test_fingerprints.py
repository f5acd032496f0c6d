"""result.json's content fingerprints (trainers/job/prepare.py): the same content anywhere gives the same hash,
any change to what a run reads gives another, and each file is hashed once."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf

import trainers.model.reference as R
from trainers.job.prepare import data_fingerprint
from trainers.model.reference import model_fingerprint, tokenizer_fingerprint

ROWS = ["id,question,A,B,C,D,answer", "q1,Popi has the sport,tennis,golf,rugby,chess,C",
        "q2,Siso has the sport,tennis,golf,rugby,chess,B"]
VOCAB = ["tokenizer_file", "tokenizer.json"]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for split in ("train", "eval"):
        (root / f"{split}.csv").write_text("\n".join(ROWS) + "\n")
    return root


def data_cfg(path, **changes):
    return OmegaConf.create({"name": "embedded", "path": str(path), "train_split": "train", "eval_split": "eval",
                             "n_train": None, "n_eval": None, "sample_seed": 0, "max_length": 128,
                             "prompt_template": "{question}", "answer_template": "{answer}", **changes})


def checkpoint(root):
    root.mkdir()
    for name, text in (("config.json", "{}"), ("model.safetensors", "weights"), ("tokenizer.json", "{\"v\": 1}"),
                       ("tokenizer_config.json", "{}")):
        (root / name).write_text(text)
    return root


def test_data_fingerprint_is_the_content_and_the_choices_not_the_path(dataset, tmp_path):
    memo = tmp_path / "memo.json"
    first = data_fingerprint(data_cfg(dataset), memo)
    moved = shutil.copytree(dataset, tmp_path / "elsewhere" / "data")
    assert data_fingerprint(data_cfg(moved), memo) == first  # same files elsewhere: same data
    assert data_fingerprint(data_cfg(dataset, name="renamed"), memo) == first  # a name is not content
    assert data_fingerprint(data_cfg(dataset, select_fraction=0.5), memo) == first  # its default, spelt out
    others = {data_fingerprint(data_cfg(dataset, **c), memo) for c in
              ({"n_train": 1}, {"sample_seed": 1}, {"select_seed": 1}, {"eval_split": None, "n_eval": 1},
               {"prompt_template": "Q: {question}"})}
    assert len(others) == 5 and first not in others
    (moved / "eval.csv").write_text("\n".join([*ROWS[:2], ROWS[2].replace(",B", ",A")]) + "\n")  # one answer
    assert data_fingerprint(data_cfg(moved), memo) != first


def test_tokenizer_and_model_fingerprints_follow_their_own_files(tmp_path):
    memo = tmp_path / "memo.json"
    ckpt = checkpoint(tmp_path / "ckpt")
    tok, model = tokenizer_fingerprint(ckpt, VOCAB, memo), model_fingerprint(ckpt, memo)
    copy = shutil.copytree(ckpt, tmp_path / "copy")
    assert (tokenizer_fingerprint(copy, VOCAB, memo), model_fingerprint(copy, memo)) == (tok, model)
    (copy / "model.safetensors").write_text("other weights")
    assert tokenizer_fingerprint(copy, VOCAB, memo) == tok and model_fingerprint(copy, memo) != model
    (copy / "tokenizer.json").write_text("{\"v\": 2}")
    assert tokenizer_fingerprint(copy, VOCAB, memo) != tok


def test_each_file_is_hashed_once_per_machine(tmp_path, monkeypatch):
    """A 7B checkpoint's 15 GB are read once: later jobs find every file's hash under its path, size and mtime."""
    memo = tmp_path / "memo.json"
    ckpt = checkpoint(tmp_path / "ckpt")
    hashed = []
    real = R._sha256_file
    monkeypatch.setattr(R, "_sha256_file", lambda p: hashed.append(p.name) or real(p))
    model_fingerprint(ckpt, memo)
    tokenizer_fingerprint(ckpt, VOCAB, memo)
    model_fingerprint(ckpt, memo)
    assert sorted(hashed) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
