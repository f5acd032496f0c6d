"""Checks of a job's config that a user can get wrong, run before anything heavy starts.

Each failure is one line that names the field and the fix. The sweep runs the same checks on
every grid point before it launches anything.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainers.data.selection import validate_split_config
from trainers.runtime.errors import ConfigError
from trainers.runtime.methods import BETA_METHODS, METHODS, beta_error, spec_error
from trainers.runtime.process import gpus_visible, is_worker, planned_world_size, world_size

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed_zero3")
# train.save_model: the exported weights' precision -> its torch dtype name (trainers/job/export.py)
EXPORT_DTYPES: dict[str, str] = {"bf16": "bfloat16"}

def reports_while_training(train) -> bool:
    """The job writes its selection accuracy to eval.jsonl before it ends (`train.eval_steps` or
    `train.report_steps`): what a pruner or early stopping judges it by."""
    return bool(int(train.get("eval_steps") or 0) or int(train.get("report_steps") or 0))


INTERMEDIATE_FIX = "set train.report_steps (e.g. 25: the selection accuracy alone) or train.eval_steps"


def _positive(value: object) -> bool:
    """A number > 0 and finite (inf passes `> 0`: a learning rate of inf diverges at the first step)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def batch_fix(n_train: int, per_step: int) -> str:
    """A batch that fits `n_train` questions and stays a multiple of the per-step batch, as overrides."""
    if per_step <= n_train:
        return f"use train.global_batch_size={per_step * (n_train // per_step)} or less (a multiple of {per_step})"
    return (f"use train.global_batch_size={n_train} train.per_device_batch_size={n_train} or less (one process; "
            "the batch must also be a multiple of train.per_device_batch_size × processes)")


def check_batch_fits(cfg: DictConfig, n_train: int, what: str, processes: int | None = None) -> None:
    """One optimizer step's batch must not exceed the training questions (`what` says where their count comes
    from): else every step would repeat questions to fill it and the run records a batch it never had."""
    t = cfg.train
    if t.global_batch_size > n_train:
        per_step = t.per_device_batch_size * (planned_world_size(cfg) if processes is None else processes)
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is more than {what} training questions: "
                          f"a step cannot use more questions than there are; {batch_fix(n_train, per_step)}")


def strategy_config(cfg: DictConfig) -> None:
    """The strategy's name and sizes, before anything divides by them (the batch check does)."""
    s = cfg.get("strategy")
    if s is None:
        return
    if s.name not in STRATEGIES:
        raise ConfigError(f"strategy={s.name!r} is not known; use one of {', '.join(STRATEGIES)}")
    for field in ("nproc_per_node", "nnodes"):
        value = s.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"strategy.{field}={value} is invalid: it must be a whole number >= 1 (e.g. "
                              f"strategy.{field}=1)")


def validate_config(cfg: DictConfig, processes: int | None = None) -> None:
    """Raise ConfigError for the first invalid field of a job config (paths excluded: see validate_paths).

    `processes` defaults to the processes the job's strategy asks for (`planned_world_size`). The checks run
    in the order of the groups below, each naming the field and a fix.
    """
    processes = planned_world_size(cfg) if processes is None else processes
    _check_method(cfg.method)
    strategy_config(cfg)
    _check_steps_and_batches(cfg, processes)
    validate_split_config(cfg.data)
    if not 0 <= cfg.train.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio={cfg.train.warmup_ratio} must be in [0, 1) (the paper uses 0.1)")
    _check_data(cfg.data)
    _check_saving(cfg.train)
    _check_plan(cfg.get("plan") or {})
    _check_reporting(cfg.train)
    missing_packages(cfg)


def _check_method(method_cfg: DictConfig) -> None:
    """A known method, its spec as its file says, and a β it accepts."""
    method = method_cfg.name
    if method not in METHODS:
        raise ConfigError(
            f"method={method!r} is not a known method; use one of {', '.join(sorted(METHODS))} "
            "(a new one is its loss function and a file in conf/method/ that names it: docs/losses.md)"
        )
    if (reason := spec_error(OmegaConf.to_container(method_cfg, resolve=True))) is not None:
        raise ConfigError(reason)
    beta = method_cfg.get("beta")
    if (reason := beta_error(method, beta)) is not None:
        if method not in BETA_METHODS:
            raise ConfigError(f"method.beta={beta} is invalid for {method}: {reason} (its loss never reads one); "
                              f"drop method.beta={beta}, or use a β method: "
                              f"{' / '.join(f'method={m} method.beta={beta}' for m in sorted(BETA_METHODS))}")
        example = "method.beta=0.1; 0 is raw SFT" if METHODS[method].beta_may_be_zero else "method.beta=0.1"
        raise ConfigError(f"method.beta={beta} is invalid for {method}: {reason} (e.g. {example})")


def _check_steps_and_batches(cfg: DictConfig, processes: int) -> None:
    """The learning rate, the batch sizes (the global one split evenly over processes and fitting the training
    data) and the length of training."""
    t = cfg.train
    if not _positive(t.lr):
        raise ConfigError(f"train.lr={t.lr} is invalid: the learning rate must be a finite number > 0 "
                          "(e.g. train.lr=1e-4)")
    for field in ("global_batch_size", "per_device_batch_size", "eval_batch_size"):
        if not (isinstance(t[field], int) and t[field] > 0):
            raise ConfigError(f"train.{field}={t[field]} is invalid: it must be a positive integer")
    per_step = t.per_device_batch_size * processes
    if t.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of train.per_device_batch_size "
            f"× processes ({t.per_device_batch_size} × {processes} = {per_step}); change one of them "
            "(or strategy.nproc_per_node)"
        )
    if isinstance(t.max_steps, bool) or not isinstance(t.max_steps, int) or t.max_steps == 0 or t.max_steps < -1:
        raise ConfigError(f"train.max_steps={t.max_steps} is invalid: a whole number of optimizer steps > 0 (e.g. "
                          f"train.max_steps=100), or -1 to train train.epochs epochs")
    if t.max_steps == -1 and not _positive(t.epochs):
        raise ConfigError(f"train.epochs={t.epochs} with train.max_steps=-1: set one of them > 0 (e.g. "
                          "train.epochs=1)")
    n_train = cfg.data.get("n_train")
    if isinstance(n_train, int) and not isinstance(n_train, bool) and n_train > 0:
        check_batch_fits(cfg, n_train, f"the data.n_train={n_train}", processes)


def _check_data(data: DictConfig) -> None:
    """The embedded world's seed, the eval size, and splits that have answers to train on and score."""
    world_seed = data.get("world_seed")
    if world_seed is not None and (isinstance(world_seed, bool) or not isinstance(world_seed, int) or world_seed < 0):
        raise ConfigError(f"data.world_seed={world_seed} is invalid: the embedded world's seed is an integer >= 0 "
                          "(0: the default world)")
    if data.get("n_eval") is not None and data.n_eval <= 0:
        raise ConfigError(f"data.n_eval={data.n_eval} must be > 0 or null (all)")
    withheld = list(data.get("withheld_answers") or [])
    for field in ("train_split", "eval_split"):
        if data.get(field) is not None and data[field] in withheld:
            others = ", ".join(f"{k}={data[k]}" for k in ("train_split", "eval_split") if k != field)
            raise ConfigError(
                f"data.{field}={data[field]}: {data.name} withholds the answers of its {data[field]} "
                f"split (its files have no answer column), so it can neither train nor score; use another split "
                f"({others}; data.eval_split=null carves the eval questions out of the training split)")


def _check_saving(t: DictConfig) -> None:
    """The exported model's precision and the periodic checkpoints' interval."""
    if t.get("save_model") is not None and t.save_model not in EXPORT_DTYPES:
        raise ConfigError(f"train.save_model={t.save_model} is not an export precision; use "
                          f"{' or '.join(EXPORT_DTYPES)} (or null: no model exported)")
    if not (t.get("checkpoint_every_min") in (0, None) or _positive(t.checkpoint_every_min)):
        raise ConfigError(f"train.checkpoint_every_min={t.checkpoint_every_min} must be >= 0 (0: no periodic "
                          "checkpoints)")


def _check_plan(plan: DictConfig | dict) -> None:
    """The resource plan's rates and fixed costs (trainers/job/plan.py)."""
    for key in ("write_gb_per_s", "periodic_save_min", "signal_delay_s"):
        if plan.get(key) is not None and not _positive(plan.get(key)):
            raise ConfigError(f"plan.{key}={plan.get(key)} must be > 0 (plan.write_gb_per_s=1.0, "
                              "plan.periodic_save_min=30, plan.signal_delay_s=120 are the defaults)")
    overhead = plan.get("job_overhead_s")
    if overhead is not None and not (overhead == 0 or _positive(overhead)):
        raise ConfigError(f"plan.job_overhead_s={overhead} must be >= 0 (seconds of a job's fixed cost on its GPUs; "
                          "plan.job_overhead_s=300 is the default)")


def _check_reporting(t: DictConfig) -> None:
    """How often a job reports its selection accuracy, and how long its ranks wait for each other."""
    report_steps = t.get("report_steps")
    if not (report_steps in (0, None) or (isinstance(report_steps, int) and _positive(report_steps))):
        raise ConfigError(f"train.report_steps={report_steps} must be a whole number of steps >= 0 (e.g. 25; 0: "
                          "the selection accuracy only at train.eval_steps)")
    if not _positive(t.get("ddp_timeout")):
        raise ConfigError(f"train.ddp_timeout={t.get('ddp_timeout')} must be a number of seconds > 0 (how long a "
                          "collective waits for the other ranks; HF's default is 1800)")


def missing_packages(cfg: DictConfig) -> None:
    """Refuse a setting whose package is not installed here, before any job starts: the sweep would run its
    prepare job first and then fail every grid point. `make sweep` installs the package and its runtime
    dependencies only; these are extras."""
    s = cfg.get("strategy")
    if s is not None and s.get("deepspeed") and find_spec("deepspeed") is None:
        raise ConfigError(f"strategy={s.name} needs deepspeed, which is not installed here; install it with "
                          "`.venv/bin/pip install -e '.[deepspeed]'` (or use strategy=fsdp)")
    if cfg.model.get("lora") and find_spec("peft") is None:
        raise ConfigError("model.lora is set but peft is not installed here; install it with "
                          "`.venv/bin/pip install -e '.[lora]'` (or set model.lora=null)")


def validate_paths(cfg: DictConfig) -> None:
    """The model directory must exist and look like a checkpoint (run after the embedded world is built)."""
    model_dir = Path(cfg.model.path)
    if not model_dir.is_dir():
        raise ConfigError(
            f"model.path={cfg.model.path} does not exist; point model.path at a local checkpoint directory "
            "(config.json, weights, tokenizer)"
        )
    if not (model_dir / "config.json").exists():
        raise ConfigError(f"model.path={cfg.model.path} has no config.json; is it a transformers checkpoint directory?")


def check_devices(cfg: DictConfig, visible_gpus: int | None = None) -> None:
    """Refuse what would silently change the experiment or re-enter Hydra per rank (on the job's node)."""
    gpus = gpus_visible() if visible_gpus is None else visible_gpus
    planned = planned_world_size(cfg)
    if planned == 1 and gpus > 1:
        raise ConfigError(
            f"{gpus} GPUs are visible to one process (the HF Trainer would use DataParallel and multiply the batch); "
            f"run strategy=ddp strategy.nproc_per_node={gpus}, or set CUDA_VISIBLE_DEVICES to one GPU"
        )
    if is_worker():
        raise ConfigError(
            "trainers.train was started under torchrun; run it directly with "
            f"strategy=ddp strategy.nproc_per_node={max(world_size(), 2)}: the job starts its own workers"
        )
    strategy_config(cfg)
    s = cfg.get("strategy")
    if s is not None and s.name != "single" and gpus > 0 and gpus < int(s.nproc_per_node):
        raise ConfigError(f"strategy.nproc_per_node={s.nproc_per_node} but {gpus} GPUs are visible on this node; "
                          f"lower it or request more GPUs (hydra.launcher.gpus_per_node)")
    # ZeRO-3 runs on a CPU (DeepSpeed's CPU accelerator over gloo: every rank holds its shard); FSDP does not
    if s is not None and s.name == "fsdp" and gpus == 0:
        raise ConfigError(f"strategy={s.name} needs GPUs (on CPU the HF Trainer silently falls back to DDP); "
                          "use strategy=ddp or strategy=deepspeed_zero3 here")
    if s is not None and s.name == "deepspeed_zero3" and gpus == 0 and cfg.train.get("bf16"):
        raise ConfigError("strategy=deepspeed_zero3 with train.bf16=true needs GPUs (the HF Trainer refuses bf16 "
                          "without use_cpu, which would drop DeepSpeed); set train.bf16=false here")
