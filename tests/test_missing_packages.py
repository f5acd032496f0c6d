"""A setting whose package is not installed is refused before any job starts, in one line naming the install
command: `make sweep` installs no extras, and the sweep would otherwise fail every grid point after its
prepare job had run."""

from __future__ import annotations

import pytest

import trainers.job.validate as validate
from trainers.runtime.errors import ConfigError


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = validate.find_spec
    monkeypatch.setattr(validate, "find_spec", lambda name: None if name in names else real(name))


def test_deepspeed_strategy_without_deepspeed_is_refused_with_the_install_command(job_cfg, monkeypatch):
    cfg = job_cfg("strategy=deepspeed_zero3")
    validate.validate_config(cfg, processes=1)  # installed here (a dev dependency): accepted
    _hide(monkeypatch, "deepspeed")
    with pytest.raises(ConfigError) as refused:
        validate.validate_config(cfg, processes=1)
    assert str(refused.value) == ("strategy=deepspeed_zero3 needs deepspeed, which is not installed here; install it "
                                  "with `.venv/bin/pip install -e '.[deepspeed]'` (or use strategy=fsdp)")


def test_lora_without_peft_is_refused_and_other_strategies_need_neither(job_cfg, monkeypatch):
    _hide(monkeypatch, "deepspeed", "peft")
    validate.validate_config(job_cfg("strategy=ddp"), processes=1)
    validate.validate_config(job_cfg("strategy=fsdp"), processes=1)
    lora = job_cfg("model.lora={r:4,alpha:8,dropout:0.0,target_modules:[q_proj,v_proj]}")
    with pytest.raises(ConfigError, match=r"^model\.lora is set but peft is not installed here; install it with "
                                          r"`\.venv/bin/pip install -e '\.\[lora\]'` \(or set model\.lora=null\)$"):
        validate.validate_config(lora, processes=1)
