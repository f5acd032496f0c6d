"""How a job reads its model: in the checkpoint's own dtype onto the job's device, then cast, so that a bf16
checkpoint trained with fp32 master weights never passes through host memory as an fp32 copy."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from trainers.job.prepare import load_model


def bf16_checkpoint(tiny_world, tmp_path):
    """The tiny world's model saved in bf16, as the paper's Qwen2-7B-Instruct is."""
    model = AutoModelForCausalLM.from_pretrained(tiny_world.model_dir, dtype=torch.bfloat16)
    out = tmp_path / "bf16"
    model.save_pretrained(out)
    return out


def test_a_bf16_checkpoint_loads_for_fp32_training_exactly_as_a_direct_fp32_load(job_cfg, tiny_world, tmp_path,
                                                                                   from_pretrained_calls):
    path = bf16_checkpoint(tiny_world, tmp_path)
    direct = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    del from_pretrained_calls[:]  # the reference load above
    loaded = load_model(job_cfg(f"model.path={path}", "model.dtype=float32"), device="cpu")
    # read in its own dtype (bf16) onto the job's device, then cast there
    assert [(kw.get("dtype"), kw.get("device_map")) for kw in from_pretrained_calls] == \
        [("auto", {"": torch.device("cpu")})]
    assert loaded.dtype == torch.float32 and loaded.config.dtype == torch.float32
    expected, got = direct.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    buffers = dict(direct.named_buffers())  # rotary inv_freq: computed in fp32 whatever the load dtype
    assert buffers and all(torch.equal(b, buffers[n]) for n, b in loaded.named_buffers())
    ids = torch.randint(0, direct.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, direct(ids).logits)


def test_pure_bf16_training_reads_an_fp32_checkpoint_straight_into_bf16(job_cfg, tiny_world, from_pretrained_calls):
    """Reading the fp32 checkpoint as it is and casting after would hold twice the bf16 model at once."""
    assert AutoModelForCausalLM.from_pretrained(tiny_world.model_dir).dtype == torch.float32
    del from_pretrained_calls[:]  # the check above
    loaded = load_model(job_cfg("model.dtype=bfloat16", "train.bf16=false"))
    assert [kw.get("dtype") for kw in from_pretrained_calls] == [torch.bfloat16]
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
