"""The HF `TrainingArguments` of a job, derived from its config.

The global batch is the experiment; how it is split is the scale: accumulation is derived so that
1 process × accumulation k ≡ k processes × 1, and FSDP/DeepSpeed settings come from the strategy.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from trainers.job.console import show_progress_bar
from trainers.job.result import run_name
from trainers.runtime.errors import ConfigError
from trainers.runtime.process import gpus_visible, world_size

if TYPE_CHECKING:
    from transformers import TrainingArguments


def grad_accumulation(cfg: DictConfig, processes: int) -> int:
    """Accumulation steps that keep the global batch whatever the process count (1 × k ≡ k × 1)."""
    return cfg.train.global_batch_size // (cfg.train.per_device_batch_size * processes)


def shards_the_model(cfg: DictConfig) -> bool:
    """FSDP and ZeRO-3 shard the weights: the training model is loaded after TrainingArguments exist
    (ZeRO-3's zero.Init, FSDP's rank-0 loading), not reused from the scoring pass."""
    s = cfg.get("strategy")
    return bool(s is not None and (s.get("fsdp") or s.get("deepspeed")))


def deepspeed_on_cpu(cfg: DictConfig) -> bool:
    """ZeRO-3 on a machine without GPUs: DeepSpeed's CPU accelerator, its process group over gloo."""
    s = cfg.get("strategy")
    return not gpus_visible() and bool(s is not None and s.get("deepspeed"))


def accelerate_on_cpu(cfg: DictConfig) -> bool:
    """Whether accelerate runs this job in its CPU mode (gloo process group, `use_cpu`): on a machine without
    GPUs, except under DeepSpeed, which sets up the gloo group itself (accelerate's CPU mode would drop
    DeepSpeed and leave the ZeRO config seeing a world of one)."""
    return not gpus_visible() and not deepspeed_on_cpu(cfg)


def process_group_timeout(cfg: DictConfig) -> timedelta:
    """How long a collective waits for the other ranks: `train.ddp_timeout`, for the process group the worker
    creates before TrainingArguments exist (the Trainer then reuses that group, so its own `ddp_timeout`
    alone would never reach it) and for TrainingArguments, so both say the same."""
    return timedelta(seconds=float(cfg.train.ddp_timeout))


def fsdp_layer_classes(cfg: DictConfig) -> list[str]:
    """The wrap unit of FSDP: `strategy.fsdp.fsdp_config.transformer_layer_cls_to_wrap`, else the model's
    own `_no_split_modules` (its decoder layer, e.g. Qwen2DecoderLayer), read from its config.json."""
    named = cfg.strategy.fsdp.fsdp_config.get("transformer_layer_cls_to_wrap")
    if named:
        return [named] if isinstance(named, str) else list(named)
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    classes = [getattr(transformers, arch, None) for arch in config.architectures or []]
    layers = [name for c in classes if c is not None for name in (c._no_split_modules or [])]
    if not layers:
        raise ConfigError(f"model {cfg.model.name} names no decoder layer class; set "
                          "strategy.fsdp.fsdp_config.transformer_layer_cls_to_wrap=[<LayerClass>]")
    return layers


def strategy_arguments(cfg: DictConfig) -> dict[str, Any]:
    """FSDP / DeepSpeed settings of the strategy, in the shape TrainingArguments hands to accelerate."""
    s = cfg.get("strategy")
    if s is None:
        return {}
    if s.get("fsdp"):
        fsdp_config = OmegaConf.to_container(s.fsdp.fsdp_config, resolve=True)
        fsdp_config["transformer_layer_cls_to_wrap"] = fsdp_layer_classes(cfg)
        return {"fsdp": s.fsdp.fsdp, "fsdp_config": fsdp_config}
    if s.get("deepspeed"):
        return {"deepspeed": OmegaConf.to_container(s.deepspeed, resolve=True)}
    return {}


def training_arguments(cfg: DictConfig, run_dir: Path) -> TrainingArguments:
    """The HF arguments for this job; gradient accumulation is derived from the global batch size.

    Checkpoints go to `<run_dir>/checkpoints`; W&B is reported to unless `logger=none`. On a CPU
    `use_cpu` makes accelerate join the gloo process group (without it each rank trains alone), except
    under DeepSpeed (`accelerate_on_cpu`).
    """
    from transformers import TrainingArguments  # here: the strategy facts above are read without torch

    t = cfg.train
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        run_name=run_name(cfg),
        seed=cfg.seed,
        learning_rate=t.lr,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=grad_accumulation(cfg, world_size()),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        optim=t.optim,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=t.bf16,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or None,
        save_total_limit=t.save_total_limit,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=gpus_visible() > 0,
        disable_tqdm=not show_progress_bar(cfg),
        include_num_input_tokens_seen="no",  # LossTrainer counts them from the collator, without a device sync
        report_to=[],  # W&B: trainers.job.tracking.WandbTracking, on the run the job opened (train.fit_and_evaluate)
        use_cpu=accelerate_on_cpu(cfg),
        # ZeRO-3 on a CPU: the worker's own state (DeepSpeed's gloo group); the Trainer's would see one process
        accelerator_config={"use_configured_state": True} if deepspeed_on_cpu(cfg) else None,
        ddp_timeout=int(process_group_timeout(cfg).total_seconds()),
        ddp_find_unused_parameters=False,  # every parameter takes part in every loss
        **strategy_arguments(cfg),
    )
