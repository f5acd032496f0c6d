"""What the strategies hand to accelerate, and the precision defaults, checked without a GPU.

FSDP and ZeRO-3 cannot run through the HF Trainer on a CPU (FSDP silently becomes DDP there), so
these tests check the arguments accelerate is given; their GPU run is bench/gpu_check.sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainers.job.agent import torchrun_argv
from trainers.job.arguments import grad_accumulation, training_arguments
from trainers.job.config import JOB_CONFIG, compose_job, load_job_config, save_job_config
from trainers.job.prepare import load_model
from trainers.job.validate import check_devices
from trainers.runtime.errors import ConfigError
from trainers.runtime.run_dir import config_hash


def test_fsdp_arguments_are_what_accelerate_expects(job_cfg, tmp_path):
    from accelerate.utils import FullyShardedDataParallelPlugin

    cfg = job_cfg("strategy=fsdp")
    args = training_arguments(cfg, tmp_path)
    plugin_args = args.fsdp_plugin_args
    assert plugin_args["fsdp_version"] == 2
    assert plugin_args["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # the wrap unit is the model's own decoder layer, read from its config (a Llama here, Qwen2 on the paper)
    assert plugin_args["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin_args["reshard_after_forward"] is True  # full shard
    assert plugin_args["cpu_ram_efficient_loading"] is True
    assert plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]


def test_zero3_arguments_are_filled_from_the_job(job_cfg, tmp_path, monkeypatch):
    """The arguments a GPU job gets (on this CPU a ZeRO-3 job uses its worker's DeepSpeed state instead: the
    2-process test of test_distributed.py runs that path)."""
    import deepspeed  # noqa: F401  (a dev dependency: `make test` installs it, so its absence fails)
    monkeypatch.setattr("trainers.job.arguments.deepspeed_on_cpu", lambda cfg: False)
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    cfg = job_cfg("strategy=deepspeed_zero3", "train.bf16=true", "train.global_batch_size=16",
                  "train.per_device_batch_size=4", "train.max_grad_norm=0.5")
    try:
        args = training_arguments(cfg, tmp_path)
        # TrainingArguments exist before the model is loaded, so from_pretrained runs under zero.Init
        assert is_deepspeed_zero3_enabled()
        ds = args.hf_deepspeed_config.config
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 4
        assert ds["train_batch_size"] == 16 and ds["gradient_clipping"] == 0.5
        assert ds["bf16"]["enabled"] is True
    finally:
        unset_hf_deepspeed_config()


def test_mixed_precision_is_the_default_for_gpu_models(job_cfg, tmp_path):
    """fp32 master weights and optimizer state, bf16 compute: the paper's lr of 1e-6-1e-5 would round
    away in bf16 weights. Pure bf16 only when asked (model.dtype=bfloat16)."""
    paper = compose_job(["model=qwen2_7b_instruct", "train=paper", "data=fineval"])
    assert paper.model.dtype == "float32" and paper.train.bf16 is True
    assert paper.train.optim == "adamw_torch"
    # what the job does with them, on the tiny model: the weights it loads, the precision it hands the Trainer
    mixed = job_cfg("model.dtype=float32", "train.bf16=true")
    assert {p.dtype for p in load_model(mixed).parameters()} == {torch.float32}
    args = training_arguments(mixed, tmp_path)
    assert (args.bf16, args.fp16) == (True, False)
    pure = job_cfg("model.dtype=bfloat16", "train.bf16=false")
    assert {p.dtype for p in load_model(pure).parameters()} == {torch.bfloat16}
    args = training_arguments(pure, tmp_path)
    assert (args.bf16, args.fp16) == (False, False)


def test_accumulation_keeps_the_global_batch(job_cfg):
    cfg = job_cfg("train.global_batch_size=64", "train.per_device_batch_size=4")
    assert [grad_accumulation(cfg, n) * 4 * n for n in (1, 2, 4, 8, 16)] == [64] * 5


def test_saved_config_is_the_same_experiment(job_cfg):
    cfg = job_cfg("strategy=ddp", "method=minor_sft", "method.beta=0.5")
    path = save_job_config(cfg)
    assert path == Path(cfg.run_dir).resolve() / JOB_CONFIG
    saved = load_job_config(path)
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(cfg, resolve=True)
    assert config_hash(saved) == config_hash(cfg)  # a worker's result.json is found done by the sweep
    # the process count is not part of the experiment: 1 × accumulation k ≡ k processes
    assert config_hash(job_cfg("method=minor_sft", "method.beta=0.5")) == config_hash(cfg)


def test_torchrun_arguments_one_node_and_slurm_nodes(job_cfg, tmp_path):
    cfg = job_cfg("strategy=ddp", "strategy.nproc_per_node=4")
    argv = torchrun_argv(cfg, tmp_path / "job.yaml", env={})
    assert argv[:2] == ["--nproc_per_node", "4"] and "--standalone" in argv
    assert argv[-3:] == ["--module", "trainers.worker", str(tmp_path / "job.yaml")]

    two_nodes = job_cfg("strategy=ddp", "strategy.nnodes=2", "strategy.rdzv_port=29555")
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[03-04]",
             "SFTSWEEP_RDZV_HOST": "gpu03"}
    argv = torchrun_argv(two_nodes, tmp_path / "job.yaml", env=slurm)
    assert "--standalone" not in argv
    joined = " ".join(argv)
    assert "--nnodes 2 --rdzv_backend c10d --rdzv_endpoint gpu03:29555 --rdzv_id 77" in joined
    with pytest.raises(ConfigError, match="strategy.nnodes=2 needs a SLURM allocation"):
        torchrun_argv(two_nodes, tmp_path / "job.yaml", env={})
    with pytest.raises(ConfigError, match="hydra.launcher.nodes"):
        torchrun_argv(two_nodes, tmp_path / "job.yaml", env={**slurm, "SLURM_NNODES": "1"})


@pytest.mark.parametrize(("strategy", "gpus", "cpus", "threads"), [
    ("single", None, 2, 2), ("ddp", None, 4, 2), ("fsdp", 8, 64, 8), ("deepspeed_zero3", 8, 64, 8),
])
def test_slurm_requests_what_the_strategy_needs(strategy, gpus, cpus, threads):
    from hydra import compose, initialize_config_dir

    from trainers.job.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["launcher=slurm", f"strategy={strategy}"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.cpus_per_task, cfg.train.num_threads) == (gpus, cpus, threads)
    assert launcher.tasks_per_node == 1 and launcher.nodes == cfg.strategy.nnodes  # one agent per node
    assert launcher.max_num_timeout > 0  # a job at its time limit is requeued (hydra-submitit's default is 0)


@pytest.mark.parametrize(("overrides", "env", "message"), [
    (["strategy=ddp", "strategy.nproc_per_node=2"], {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4"},
     "trainers.train was started under torchrun; run it directly with strategy=ddp strategy.nproc_per_node=4: "
     "the job starts its own workers"),
    (["strategy=fsdp"], {},
     "strategy=fsdp needs GPUs (on CPU the HF Trainer silently falls back to DDP); "
     "use strategy=ddp or strategy=deepspeed_zero3 here"),
    (["strategy=deepspeed_zero3", "train.bf16=true"], {},
     "strategy=deepspeed_zero3 with train.bf16=true needs GPUs (the HF Trainer refuses bf16 without use_cpu, which "
     "would drop DeepSpeed); set train.bf16=false here"),
    (["strategy.name=megatron"], {},
     "strategy='megatron' is not known; use one of single, ddp, fsdp, deepspeed_zero3"),
    (["strategy=ddp", "strategy.nproc_per_node=0"], {},
     "strategy.nproc_per_node=0 is invalid: it must be a whole number >= 1 (e.g. strategy.nproc_per_node=1)"),
], ids=["under-torchrun", "fsdp-on-cpu", "zero3-bf16-on-cpu", "unknown-strategy", "no-process"])
def test_check_devices_refuses_what_would_change_the_experiment(monkeypatch, overrides, env, message):
    """The refusals of check_devices (README), on this CPU-only machine; the same strategies pass unrefused
    where they can run."""
    if torch.cuda.is_available():
        pytest.skip("the CPU refusals need a machine without GPUs")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        check_devices(compose_job(overrides))
    assert str(info.value) == message


def test_check_devices_lets_ddp_and_zero3_on_cpu_through():
    assert check_devices(compose_job(["strategy=ddp", "strategy.nproc_per_node=2"])) is None
    assert check_devices(compose_job(["strategy=deepspeed_zero3", "strategy.nproc_per_node=2"])) is None
    assert check_devices(compose_job(["strategy=single"])) is None
