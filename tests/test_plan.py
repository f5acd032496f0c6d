"""The resource plan (trainers/job/plan.py): its counts against the model built from the same config, its bytes
per parameter against the precision/optimizer/sharding rules, the refusal of a job its GPU cannot hold, and the
SLURM request it makes (the user's own values kept)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from conftest import REPO_ROOT
from sweep.submitit_launchers import SlurmLauncher
from trainers.job.config import CONF_DIR, compose_job
from trainers.job.plan import (
    CUDA_HOST_GB,
    GB,
    REQUEST_HEADROOM,
    RUNTIME_GB,
    check_fits,
    device_memory,
    effective_request,
    gradient_checkpointing,
    make_plan,
    training_steps,
)
from trainers.runtime.errors import ConfigError

# Qwen2-7B-Instruct's published config.json (the shape only; no weights are read)
QWEN2_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
            "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
            "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "torch_dtype": "bfloat16"}
# a small shape with what makes counting easy to get wrong: grouped-query attention, biases, untied head
TINY_QWEN2 = {**QWEN2_7B, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300}


def _checkpoint_dir(path: Path, config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def tiny_qwen(tmp_path: Path) -> Path:
    return _checkpoint_dir(tmp_path / "tiny-qwen2", TINY_QWEN2)


def _cfg(model_dir: Path, *overrides: str):
    return compose_job([f"model.path={model_dir}", "model.embedded=false", "model.name=m", *overrides])


def test_parameter_counts_are_the_models_own(tiny_qwen):
    model = Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2))
    plan = make_plan(_cfg(tiny_qwen, "data.n_train=64"))
    assert plan.shape.params == sum(p.numel() for p in model.parameters())
    assert plan.shape.trainable == plan.shape.params
    assert (plan.shape.layers, plan.shape.hidden, plan.shape.vocab) == (3, 64, 300)
    assert plan.shape.kv_hidden == 2 * 64 // 4  # kv heads × head dim
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    planned = make_plan(_cfg(tiny_qwen, "data.n_train=64",
                             "model.lora={r:4,alpha:8,dropout:0.0,target_modules:[q_proj,v_proj]}"))
    assert planned.shape.trainable == sum(p.numel() for p in lora.parameters() if p.requires_grad)


@pytest.mark.parametrize(("overrides", "weights", "grads", "optim", "shards"), [
    (["model.dtype=float32", "train.bf16=false"], 4, 4, 8, 1),     # fp32 AdamW: 16 bytes per parameter
    (["model.dtype=bfloat16", "train.bf16=false"], 2, 2, 4, 1),    # state in the parameters' dtype
    (["model.dtype=float32", "train.bf16=true", "strategy=fsdp", "strategy.nproc_per_node=4"], 4, 4, 8, 4),
    (["model.dtype=float32", "train.bf16=true", "strategy=deepspeed_zero3", "strategy.nproc_per_node=4"], 2, 2, 12, 4),
])
def test_bytes_per_parameter_follow_precision_optimizer_and_sharding(tiny_qwen, overrides, weights, grads, optim,
                                                                     shards):
    cfg = _cfg(tiny_qwen, "data.n_train=64", *overrides)
    plan = make_plan(cfg)
    n = plan.shape.params
    assert (plan.device.weights, plan.device.gradients, plan.device.optimizer) == \
        (weights * n / shards, grads * n / shards, optim * n / shards)
    assert plan.checkpoint == (weights + optim) * n  # every rank's shard together: weights and AdamW state


def test_host_memory_holds_the_weights_file_once_per_node_and_rank_0s_copy_where_it_shards(tiny_qwen, tmp_path):
    fsdp = make_plan(_cfg(tiny_qwen, "data.n_train=64", "strategy=fsdp", "strategy.nproc_per_node=4"))
    ddp = make_plan(_cfg(tiny_qwen, "data.n_train=64", "strategy=ddp", "strategy.nproc_per_node=4",
                         "plan.on_gpu=true"))
    params, runtime = fsdp.shape.params, 4 * (RUNTIME_GB + CUDA_HOST_GB) * GB  # 4 processes
    assert fsdp.shape.checkpoint_dtype == "bfloat16"  # config.json's torch_dtype: 2 bytes per parameter on disk
    # every rank reads the file straight onto its GPU: its pages once per node, whatever the number of ranks
    assert ddp.host_per_node == runtime + 2 * params
    # under FSDP rank 0 also holds the whole fp32 model (model.dtype), which accelerate shards from; ranks 1-3 meta
    assert fsdp.host_per_node == runtime + 2 * params + 4 * params
    untyped = _checkpoint_dir(tmp_path / "untyped", {k: v for k, v in TINY_QWEN2.items() if k != "torch_dtype"})
    plan = make_plan(_cfg(untyped, "data.n_train=64", "strategy=ddp", "strategy.nproc_per_node=4", "plan.on_gpu=true"))
    assert plan.shape.checkpoint_dtype is None and plan.host_per_node == runtime + 4 * params  # as model.dtype


def test_steps_are_counted_as_the_trainer_counts_them(tiny_qwen):
    # 100 questions, 4 per process × 2 processes, global 16: 13 batches per process, accumulation 2 -> 6 steps
    cfg = _cfg(tiny_qwen, "strategy=ddp", "strategy.nproc_per_node=2", "train.per_device_batch_size=4",
               "train.global_batch_size=16", "train.max_steps=-1", "train.epochs=2")
    assert training_steps(cfg, 100) == 2 * (math.ceil(100 / 8) // 2)
    assert training_steps(_cfg(tiny_qwen, "train.max_steps=7"), 100) == 7


def test_a_7b_full_fine_tune_on_one_80gb_gpu_is_refused_in_one_line(tmp_path):
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    model = ["experiment=paper_fineval", f"model.path={qwen7b}", "data.n_train=2420"]
    single = _cfg(qwen7b, *model, "strategy=single")
    with pytest.raises(ConfigError) as refused:
        check_fits(single, make_plan(single))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("strategy=single: m needs ")
    assert "plan.gpu_mem_gb=80" in message and "use strategy=fsdp strategy.nproc_per_node=8" in message
    fsdp = _cfg(qwen7b, *model)  # the paper experiments' own strategy: fsdp on 8 GPUs
    plan = make_plan(fsdp)
    check_fits(fsdp, plan)
    assert plan.shape.params == 7_615_616_512  # Qwen2-7B's published parameter count
    assert plan.device.weights == 4 * plan.shape.params / 8
    assert not plan.gradient_checkpointing  # sharded state leaves room for the activations (issue 20, item 8)


def test_gradient_checkpointing_is_on_only_where_the_gpu_needs_it(tiny_qwen):
    gpu = ["plan.on_gpu=true", "data.n_train=64", "train.per_device_batch_size=32", "train.global_batch_size=32",
           "data.max_length=1024"]
    roomy = _cfg(tiny_qwen, *gpu)
    memory = device_memory(roomy, make_plan(roomy).shape)
    assert not gradient_checkpointing(roomy)
    between = (memory.total(True) + memory.total(False)) / 2 / 0.9 / GB  # holds it only checkpointed
    tight = _cfg(tiny_qwen, *gpu, f"plan.gpu_mem_gb={between}")
    assert gradient_checkpointing(tight)
    assert not gradient_checkpointing(_cfg(tiny_qwen, *gpu, f"plan.gpu_mem_gb={between}",
                                           "model.gradient_checkpointing=false"))  # the user's setting stands
    assert not gradient_checkpointing(_cfg(tiny_qwen, *gpu[1:], f"plan.gpu_mem_gb={between}"))  # CPU: never


def _slurm_cfg(model_dir: Path, *overrides: str, launcher: str = "slurm"):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            f"launcher={launcher}", f"model.path={model_dir}", "model.embedded=false", "model.name=m",
            "data.n_train=64", *overrides])
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_the_slurm_request_comes_from_the_plan_unless_the_user_sets_it(tiny_qwen):
    cfg = _slurm_cfg(tiny_qwen, "strategy=ddp", "strategy.nproc_per_node=2")
    plan = make_plan(cfg)
    request = effective_request(cfg, plan)
    assert request == {"mem_gb": math.ceil(REQUEST_HEADROOM * plan.host_per_node / GB), "gpus_per_node": 0,
                       "cpus_per_task": cfg.strategy.cpus_per_node}
    launcher = SlurmLauncher(**cfg.hydra.launcher)
    assert launcher.fill_request(request) == request and launcher.params["mem_gb"] == request["mem_gb"]
    user = _slurm_cfg(tiny_qwen, "hydra.launcher.mem_gb=123", "hydra.launcher.cpus_per_task=5")
    kept = effective_request(user, make_plan(user))
    assert (kept["mem_gb"], kept["cpus_per_task"]) == (123, 5)
    launcher = SlurmLauncher(**user.hydra.launcher)
    filled = launcher.fill_request(make_plan(user).request)  # the plan's own figures: only unset fields take them
    assert (filled["mem_gb"], filled["cpus_per_task"]) == (123, 5) and filled["gpus_per_node"] == 0
    on_gpus = _slurm_cfg(tiny_qwen, "strategy=ddp", "strategy.nproc_per_node=4", "plan.on_gpu=true")
    assert effective_request(on_gpus, make_plan(on_gpus))["gpus_per_node"] == 4  # one GPU per process


def test_disk_at_peak_counts_the_checkpoint_a_slurm_warning_writes_even_without_periodic_saves(tiny_qwen):
    from sweep.planning import checkpoints_held

    assert checkpoints_held(_slurm_cfg(tiny_qwen, "train.save_steps=0", "train.checkpoint_every_min=0")) == (2, 0)
    kept = _slurm_cfg(tiny_qwen, "train.save_steps=0", "train.keep_checkpoints=true", "train.save_total_limit=2")
    assert checkpoints_held(kept) == (3, 2)
    local = _slurm_cfg(tiny_qwen, "train.save_steps=0", launcher="joblib")  # no warning, no periodic save
    assert checkpoints_held(local) == (0, 0)


def test_a_request_above_the_partitions_limit_is_refused(tiny_qwen):
    cfg = _slurm_cfg(tiny_qwen, "hydra.launcher.mem_gb=600", "plan.limits.mem_gb=512")
    with pytest.raises(ConfigError, match=r"^the SLURM request hydra\.launcher\.mem_gb=600 is above the "
                                          r"partition's 512 \(plan\.limits\.mem_gb\); "):
        check_fits(cfg, make_plan(cfg))
    check_fits(*(lambda c: (c, make_plan(c)))(_slurm_cfg(tiny_qwen, "plan.limits.mem_gb=512")))


def test_make_plan_prints_the_plan_and_refuses_what_cannot_fit_before_anything_starts(tiny_world, tmp_path):
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    sweep_dir = tmp_path / "sweep"
    base = [sys.executable, "-m", "trainers.train", "-m", "hydra.sweeper.plan_only=true",
            f"hydra.sweep.dir={sweep_dir}", "logger=none"]
    ok = subprocess.run(base + ["experiment=smoke", f"paths.embedded_dir={tiny_world.root}", "model.embedded=false"],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "[plan] per job (5 of 5 grid points):" in ok.stdout and "steps 10" in ok.stdout
    refused = subprocess.run(base + ["experiment=paper_fineval", f"model.path={qwen7b}", "strategy=single",
                                     "launcher=slurm"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "use strategy=fsdp strategy.nproc_per_node=8" in errors[0]
    assert not sweep_dir.exists()  # nothing written, nothing launched


def test_the_tiny_models_count_is_torchs(job_cfg):
    from transformers import AutoModelForCausalLM

    cfg = job_cfg()
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)
    assert make_plan(cfg).shape.params == sum(p.numel() for p in model.parameters())


def test_periodic_saves_turn_on_where_the_warnings_save_would_not_fit_its_window(tmp_path):
    """Qwen2-7B, fp32 weights and AdamW: 3 × 4 bytes × 7,615,616,512 parameters = 85.1 GiB; at the assumed 1 GiB/s
    that is 85.1 s, × 1.5 room = 127.7 s > 120 − 15 = 105 s of SLURM's warning: periodic saves. At 2 GiB/s
    (63.8 s) the warning's save fits; off SLURM there is no warning; the user's own setting always wins."""
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    paper = ["experiment=paper_fineval", "data.n_train=2420"]
    cfg = _slurm_cfg(qwen7b, *paper)
    assert cfg.hydra.launcher.signal_delay_s == 120 and cfg.train.checkpoint_every_min is None
    plan = make_plan(cfg)
    assert plan.save_s == pytest.approx(12 * 7_615_616_512 / 2**30)
    assert plan.periodic_save_min == 30
    assert make_plan(_slurm_cfg(qwen7b, *paper, "plan.write_gb_per_s=2.0")).periodic_save_min == 0
    assert make_plan(_slurm_cfg(qwen7b, *paper, "plan.signal_delay_s=300")).periodic_save_min == 0  # 285 s
    assert make_plan(_slurm_cfg(qwen7b, *paper, "train.checkpoint_every_min=0")).periodic_save_min == 0
    assert make_plan(_cfg(qwen7b, *paper)).periodic_save_min == 0  # not on SLURM: no warning to save at


def test_the_warnings_save_waits_the_warnings_lead_less_the_requeue(monkeypatch):
    """submitit calls the launcher's `checkpoint` at SIGUSR2: the save may take 120 − 15 = 105 s (it had 60)."""
    from sweep import submitit_launchers

    waited = []
    monkeypatch.setattr(submitit_launchers, "request_save", lambda timeout_s: waited.append(timeout_s))
    launcher = SlurmLauncher.__new__(SlurmLauncher)
    launcher.params = {"signal_delay_s": 120}
    launcher.checkpoint()  # then the library's requeue of the same call
    assert waited == [105.0]


# Qwen2-7B by hand: P parameters; one decoder layer = q (h·h + h bias), k and v (h·kv + kv each), o (h·h),
# SwiGLU's gate, up, down (3·h·i), two RMSNorms (2h); h 3584, kv 4 heads × 128 = 512, i 18944
P_7B = 7_615_616_512
LAYER_7B = (3584 * 3584 + 3584) + 2 * (3584 * 512 + 512) + 3584 * 3584 + 3 * 3584 * 18944 + 2 * 3584
PAPER_7B = ["experiment=paper_fineval", "data.n_train=2420"]


def test_fsdp_counts_a_decoder_layer_and_the_unsharded_gradients_accumulation_keeps(tmp_path):
    """FSDP gathers one decoder layer at a time (233M parameters, not the 545M embedding); with accumulation
    (64 / (4 × 8) = 2 micro-batches) every layer's bf16 gradient stays unsharded until the last micro-batch."""
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    assert LAYER_7B == 233_057_792
    plan = make_plan(_cfg(qwen7b, *PAPER_7B))
    assert plan.shape.layer_params == LAYER_7B
    assert plan.device.extra == 3 * LAYER_7B * 2 + 2 * P_7B  # gathered layers + the accumulation buffer (14.2 GiB)
    no_accumulation = make_plan(_cfg(qwen7b, *PAPER_7B, "train.per_device_batch_size=8"))  # 64 / (8 × 8) = 1
    assert no_accumulation.device.extra == 3 * LAYER_7B * 2


def test_the_prepare_jobs_whole_model_on_every_gpu_is_planned_and_checked(tmp_path):
    """Every rank of the prepare job loads the fp32 model whole (4 bytes × P = 28.4 GiB) and then scores with its
    parameters in bf16 under FSDP; single/DDP score the fp32 weights under autocast, which caches a bf16 copy."""
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    assert make_plan(_cfg(qwen7b, *PAPER_7B)).prepare_device == 4 * P_7B
    tokens = 16 * 1024  # train.eval_batch_size × data.max_length
    working = tokens * 2 * (2 * 3584 + 2 * 512 + 3 * 18944)  # a layer's bf16 q/o, k/v and SwiGLU outputs
    head = 16 * 32 * 152064 * (2 + 4)  # 32 answer positions per question: bf16 logits, fp32 log-softmax
    ddp = make_plan(_cfg(qwen7b, *PAPER_7B, "strategy=ddp", "strategy.nproc_per_node=8"))
    assert ddp.prepare_device == 4 * P_7B + 2 * P_7B + working + head
    # 32 GPUs hold the training job (no accumulation at a global batch of 128) but not the prepare job's load
    small = _cfg(qwen7b, *PAPER_7B, "strategy.nnodes=4", "train.global_batch_size=128", "plan.gpu_mem_gb=30")
    with pytest.raises(ConfigError, match=r"^the prepare job's scoring passes load m whole on every GPU: 28\.4 GB"):
        check_fits(small, make_plan(small))


def test_gpu_hours_count_each_jobs_fixed_cost_on_its_gpus(tmp_path):
    """2 paper jobs of 38 steps × 64 × 1024 tokens at 3,000 tokens/s per GPU: 0.46 GPU-hours of training; each
    job also holds its 8 GPUs for plan.job_overhead_s = 300 s: 2 × 8 × 300 / 3600 = 1.33 GPU-hours."""
    from sweep.planning import sweep_lines

    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    cfg = _slurm_cfg(qwen7b, *PAPER_7B, "plan.tokens_per_s=3000", "plan.job_overhead_s=300")
    plan = make_plan(cfg)
    assert plan.steps == (math.ceil(2420 / (4 * 8)) // 2) == 38
    (line,) = [x for x in sweep_lines(cfg, [cfg, cfg], [plan, plan]) if x.startswith("[plan] sweep:")]
    training, fixed = 2 * 38 * 64 * 1024 / 3000 / 3600, 2 * 8 * 300 / 3600
    assert f"{training + fixed:.1f} GPU-hours: {training:.1f} training" in line
    assert f"+ {fixed:.1f} fixed (2 jobs" in line


@pytest.mark.parametrize(("launcher", "at_once"), [("submitit_local", 5), ("joblib", 2), ("local", 1)])
def test_jobs_at_once_is_what_the_launcher_runs_together(launcher, at_once):
    """submitit's local launcher starts every job as its own process at once (the issue measured 5 of 5);
    joblib runs n_jobs (2 in conf/launcher/joblib.yaml); the basic launcher one after another."""
    from omegaconf import OmegaConf

    from sweep.planning import jobs_at_once

    conf = OmegaConf.load(REPO_ROOT / "conf" / "launcher" / f"{launcher}.yaml")
    hydra_launcher = OmegaConf.select(conf, "hydra.launcher", default=None)  # the basic launcher has none
    launcher_cfg = {} if hydra_launcher is None else OmegaConf.to_container(hydra_launcher, resolve=False)
    cfg = OmegaConf.create({"hydra": {"launcher": launcher_cfg}, "launcher": conf.launcher})
    assert jobs_at_once(cfg, 5) == at_once


def test_ddp_holds_a_second_copy_of_the_gradients_in_its_buckets(tmp_path):
    """DDP on 8 GPUs, fp32 weights under bf16 autocast, by hand per GPU: the gradients 4 × P, DDP's buckets a second
    4 × P, autocast's cached bf16 weights 2 × P (nothing sharded)."""
    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    ddp = make_plan(_cfg(qwen7b, *PAPER_7B, "strategy=ddp", "strategy.nproc_per_node=8"))
    assert ddp.device.gradients == 4 * P_7B
    assert ddp.device.extra == 2 * P_7B + 4 * P_7B


def test_cpu_jobs_hold_one_whole_process_per_rank_in_host_memory(tiny_qwen):
    """On a CPU every rank is a process with its own runtime, model and training state: two DDP processes hold
    exactly twice what one holds (same per-device batch, nothing sharded)."""
    common = ("plan.on_gpu=false", "strategy=ddp", "train.per_device_batch_size=8", "data.n_train=64")
    one = make_plan(_cfg(tiny_qwen, *common, "strategy.nproc_per_node=1", "train.global_batch_size=16"))
    two = make_plan(_cfg(tiny_qwen, *common, "strategy.nproc_per_node=2", "train.global_batch_size=16"))
    assert two.host_per_node == pytest.approx(2 * one.host_per_node)
    assert one.host_per_node > 0.6 * 2**30  # at least the runtime of one process


def test_disk_at_peak_counts_running_jobs_and_the_checkpoints_ended_jobs_keep(tmp_path):
    """3 paper jobs on SLURM, one at a time, keeping their checkpoints: while the last runs it holds up to
    save_total_limit (1) plus the one being written, and each of the 2 ended jobs keeps 1: (2 + 2) checkpoints of
    3 × 4 bytes × P (fp32 weights and AdamW's two moments) = 48 × 7,615,616,512 bytes = 340.4 GiB."""
    from sweep.planning import sweep_lines

    qwen7b = _checkpoint_dir(tmp_path / "Qwen2-7B-Instruct", QWEN2_7B)
    cfg = _slurm_cfg(qwen7b, *PAPER_7B, "train.keep_checkpoints=true", "hydra.launcher.array_parallelism=1")
    plan = make_plan(cfg)
    assert plan.checkpoint == 12 * P_7B
    (line,) = [x for x in sweep_lines(cfg, [cfg] * 3, [plan] * 3) if x.startswith("[plan] disk at peak:")]
    assert line.startswith(f"[plan] disk at peak: {48 * P_7B / 2**30:.1f} GB of checkpoints"), line


def test_a_models_shape_is_kept_by_its_config_and_read_back_without_torch(tmp_path, monkeypatch):
    """The sweeper plans a model it has planned before without importing torch (some 5 s of CPU per sweep):
    the shape is kept under the user's cache by config.json's content, so a config one layer deeper is counted
    afresh, exactly one decoder layer more, and a damaged cache file is counted afresh and written whole."""
    three = _checkpoint_dir(tmp_path / "three", TINY_QWEN2)
    four = _checkpoint_dir(tmp_path / "four", {**TINY_QWEN2, "num_hidden_layers": 4})
    code = ("import json, sys\nfrom omegaconf import OmegaConf\nfrom trainers.job.plan import model_shape\n"
            "shapes = [model_shape(OmegaConf.create({'model': {'path': p, 'name': 'm', 'lora': None, "
            "'trust_remote_code': False, 'embedded': False}})).params for p in sys.argv[1:]]\n"
            "print(json.dumps({'params': shapes, 'torch': 'torch' in sys.modules}))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def plan(*dirs: Path) -> dict:
        out = subprocess.run([sys.executable, "-c", code, *map(str, dirs)], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.splitlines()[-1])

    first = plan(three, four)
    model = Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2))
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert first == {"params": [sum(p.numel() for p in model.parameters()),
                                sum(p.numel() for p in model.parameters()) + layer], "torch": True}
    kept = sorted((tmp_path / "cache" / "sftsweep" / "model-shapes").glob("*.json"))
    assert len(kept) == 2
    assert plan(three, four) == {"params": first["params"], "torch": False}
    whole = {path: path.read_text() for path in kept}
    for path in kept:
        path.write_text("{\"params\": ")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert [make_plan(_cfg(d, "data.n_train=64")).shape.params for d in (three, four)] == first["params"]
    assert {path: path.read_text() for path in kept} == whole
