"""What one job needs — GPU memory per device, host memory per node, checkpoint size, steps — from the
model's config and the job's settings, before any weight is read; and the refusal of a job that cannot fit.

Where each figure comes from:

- **Parameters** are counted exactly: the model is built from its config.json on the meta device
  (accelerate's `init_empty_weights`), and the largest decoder layer (the model's `_no_split_modules`). LoRA
  adds r × (in + out) per target Linear, the A and B matrices peft creates.
- **Weights, gradients, AdamW state** are bytes per parameter (Rajbhandari et al. 2020, "ZeRO", §3):
  weights and gradients in `model.dtype`, AdamW's two moments in the same dtype (torch's AdamW keeps its
  state in the parameter's dtype); ZeRO-3 with bf16 keeps bf16 weights and gradients and an fp32 master
  copy with the moments (2 + 2 + 12 bytes). FSDP and ZeRO-3 divide all three by the world size; FSDP
  adds the bf16 copies of the decoder layers it has gathered (the current and the prefetched one, and one
  layer's unsharded gradient), and with gradient accumulation the unsharded gradients of every layer between
  micro-batches (accelerate's `no_sync` turns FSDP2's reduce-scatter off until the last one). DDP adds its
  gradient buckets (a second copy of the gradients); autocast
  caches a bf16 copy of the weights for the forward.
- **Activations** count the tensors a Llama/Qwen2 decoder layer saves for backward, per token (the method
  of Korthikanti et al. 2022, "Reducing Activation Recomputation", §4.1, applied to RMSNorm, grouped-query
  attention, SwiGLU and sdpa, whose flash / memory-efficient kernels keep no sequence × sequence matrix),
  for a micro-batch of `per_device_batch_size` × `data.max_length` tokens (padding to the longest sequence
  of a batch makes this an upper bound). Gradient checkpointing keeps each layer's input and recomputes one
  layer at a time. Logits are computed at answer positions only (trainers/model/logprobs.py).
- **Host memory** per process: the runtime (python, torch, transformers and the job's modules imported:
  RSS measured on the CPU build, `RUNTIME_GB`) plus, on GPUs, CUDA's host-side context (`CUDA_HOST_GB`,
  an allowance, not measured here). On GPUs every rank reads the weights file straight onto its GPU
  (trainers/job/prepare.py), so the node holds the file's pages once (its size: the checkpoint's own dtype
  from config.json); a training job under FSDP (cpu_ram_efficient_loading) or ZeRO-3 also holds rank 0's
  whole copy in `model.dtype`, which accelerate and DeepSpeed shard from. On a CPU each process holds its
  model, training state and activations.
- **Checkpoint**: weights plus AdamW state (what the HF Trainer, FSDP's sharded state dict and ZeRO write;
  scheduler and RNG state are negligible). Under LoRA the Trainer saves the adapter and its state only.
- **Save time** at SLURM's warning: the checkpoint over `plan.write_gb_per_s` (an assumed write bandwidth of
  the job's ranks together to the checkpoint filesystem: 1 GB/s, the slow end of NFS-class storage). The
  warning's save has `save_window_s` (the warning's lead less the requeue's `REQUEUE_S`); where the estimate
  × `SAVE_HEADROOM` does not fit it, the job also saves every `plan.periodic_save_min` minutes
  (`train.checkpoint_every_min: null`, the paper configs': the plan decides).
- **Steps**: as the HF Trainer counts them: ceil(epochs × (batches per process // accumulation)), or
  `train.max_steps`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainers.job.shape_cache import read_shape, shape_key, write_shape
from trainers.runtime.errors import ConfigError

GB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
RUNTIME_GB = 0.6  # RSS of a job process once python, torch 2.13 (CPU), transformers 5.24 and trainers/ are imported
CUDA_HOST_GB = 2.0  # host memory a process's CUDA context and kernels take (allowance; not measured here)
GPU_USABLE = 0.9  # of a GPU's memory, what tensors can use (the rest: CUDA context, allocator fragmentation)
REQUEST_HEADROOM = 1.25  # SLURM memory request = plan × this: the estimate's own error, measured within ±30%
ANSWER_TOKENS = 32  # answer positions per sample the loss keeps logits for (an allowance: answers are short)
SHARDING = ("fsdp", "deepspeed_zero3")
REQUEUE_S = 15.0  # of SLURM's warning lead, what submitit's requeue and the job's exit need after the save
SAVE_HEADROOM = 1.5  # a save cut short restarts the job from its last checkpoint: the estimate must fit with room


@dataclass(frozen=True)
class ModelShape:
    """The model's size and shape, read from its config (no weights)."""

    name: str
    params: int  # every parameter, tied ones once
    trainable: int  # params, or the LoRA adapters' alone
    layer_params: int  # the largest decoder layer (FSDP's gather unit)
    layers: int
    hidden: int
    intermediate: int
    kv_hidden: int  # key/value width: kv heads × head dim (grouped-query attention)
    vocab: int
    checkpoint_dtype: str | None = None  # the weights' dtype on disk (config.json's), None where it does not say


@dataclass(frozen=True)
class Memory:
    """Bytes one device holds, by kind; `activations_ckpt` is the activations with gradient checkpointing."""

    weights: float
    gradients: float
    optimizer: float
    extra: float  # FSDP gathered layers, DDP buckets, autocast's weight copies
    activations: float
    activations_ckpt: float

    def total(self, checkpointing: bool) -> float:
        acts = self.activations_ckpt if checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + self.extra + acts


@dataclass(frozen=True)
class Plan:
    """One job's resources. Memory in bytes; `request` is the SLURM request the plan asks for."""

    shape: ModelShape
    strategy: str
    processes_per_node: int
    nodes: int
    on_gpu: bool
    device: Memory  # per GPU (on_gpu), else per process in host memory
    gradient_checkpointing: bool
    host_per_node: float  # the peak of any job (the prepare job's scoring passes included): the SLURM request
    checkpoint: float
    steps: int | None
    tokens: int | None  # trained tokens, at most (steps × global batch × max_length)
    prepare_device: float = 0.0  # per GPU (or CPU process) in the prepare job's scoring passes
    save_s: float = 0.0  # one checkpoint's write time at plan.write_gb_per_s
    periodic_save_min: float = 0.0  # the job's periodic saves (0: none), `periodic_save_min`
    request: dict[str, int] = field(default_factory=dict)

    @property
    def device_total(self) -> float:
        return self.device.total(self.gradient_checkpointing)

    @property
    def gpus(self) -> int:
        return self.request.get("gpus_per_node", 0) * self.nodes


# ------------------------------------------------------------------------------------------- the model


def _lora_params(model: object, lora: dict) -> int:
    """r × (in + out) for every Linear whose name ends with one of `target_modules` (peft's A and B)."""
    import torch

    targets = tuple(lora.get("target_modules") or ())
    return sum(int(lora["r"]) * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets)


@lru_cache(maxsize=16)
def _shape(name: str, config_json: str, lora_json: str, trust_remote_code: bool) -> ModelShape:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = json.loads(config_json)
    config = AutoConfig.for_model(**config_dict)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype="float32", trust_remote_code=trust_remote_code)
    model.tie_weights()  # built under init_empty_weights, a tied head is a parameter of its own until tied again
    params = sum(p.numel() for p in model.parameters())
    layer_params = _decoder_layer_params(model)
    lora = json.loads(lora_json)
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    return ModelShape(
        name=name, params=params, trainable=_lora_params(model, lora) if lora else params,
        layer_params=layer_params, layers=c.num_hidden_layers, hidden=c.hidden_size,
        intermediate=getattr(c, "intermediate_size", None) or 4 * c.hidden_size, kv_hidden=kv_heads * head_dim,
        vocab=c.vocab_size, checkpoint_dtype=_dtype_name(config_dict.get("dtype") or config_dict.get("torch_dtype")),
    )


def _decoder_layer_params(model: object) -> int:
    """Parameters of the largest decoder layer, FSDP's wrap unit (the model's `_no_split_modules`, e.g.
    Qwen2DecoderLayer); accelerate's `calculate_maximum_sizes` names the largest module, the embedding on a
    large vocabulary."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    sizes = [sum(p.numel() for p in m.parameters()) for m in model.modules() if type(m).__name__ in names]
    return max(sizes) if sizes else max(sum(p.numel() for p in m.parameters(recurse=False))
                                        for m in model.modules())


def _dtype_name(value: object) -> str | None:
    """"bfloat16" from config.json's dtype ("bfloat16", "torch.bfloat16"); None for one the plan has no size of."""
    name = str(value).removeprefix("torch.") if value else None
    return name if name in BYTES else None


def model_shape(cfg: DictConfig) -> ModelShape:
    """The job's model shape from its config.json (the embedded model's without building it), kept on disk by
    config.json's content (trainers/job/shape_cache.py): a sweeper that has planned this model before imports
    no torch."""
    lora = cfg.model.get("lora")
    lora_json = json.dumps(OmegaConf.to_container(lora, resolve=True) if lora else None, sort_keys=True)
    trust = bool(cfg.model.trust_remote_code)
    config_file = Path(cfg.model.path) / "config.json"
    key = None
    if config_file.is_file():
        settings = {"name": cfg.model.name, "lora": lora_json, "trust_remote_code": trust}
        key = shape_key(config_file.read_bytes(), settings, Path(__file__))
        cached = read_shape(key, ModelShape)
        if cached is not None:
            return cached
    shape = _shape(cfg.model.name, _model_config(cfg).to_json_string(use_diff=False), lora_json, trust)
    if key is not None:
        write_shape(key, shape)
    return shape


def _model_config(cfg: DictConfig):
    """transformers' config of the job's model: its config.json, or the embedded world's before it is built."""
    if cfg.model.get("embedded"):
        from trainers.world.build import embedded_model_config, seeded_world

        world = seeded_world(int(cfg.data.get("world_seed") or 0))
        return embedded_model_config(Path(cfg.paths.embedded_dir), world)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.path={cfg.model.path}: its config.json cannot be read for the resource plan "
                          f"({str(exc).splitlines()[0]}); point model.path at a checkpoint directory") from exc


# ------------------------------------------------------------------------------------------- memory


def on_gpu(cfg: DictConfig) -> bool:
    """The job runs on GPUs: the strategy asks for them, or `plan.on_gpu` says its processes have one each."""
    s = cfg.strategy
    return bool(s.get("gpus_per_node")) or bool(cfg.get("plan", {}).get("on_gpu"))


def gpus_per_node(cfg: DictConfig) -> int:
    """GPUs one node needs: strategy.gpus_per_node when set, else one per process on GPUs, else none."""
    if cfg.strategy.get("gpus_per_node"):
        return int(cfg.strategy.gpus_per_node)
    return int(cfg.strategy.nproc_per_node) if on_gpu(cfg) else 0


def activation_bytes(cfg: DictConfig, shape: ModelShape) -> tuple[float, float]:
    """(without, with gradient checkpointing) activation bytes of one micro-batch on one device."""
    weight_bytes = BYTES[cfg.model.dtype]
    compute = 2 if cfg.train.get("bf16") else weight_bytes
    h, kv, inter = shape.hidden, shape.kv_hidden, shape.intermediate
    tokens = int(cfg.train.per_device_batch_size) * int(cfg.data.max_length)
    # two RMSNorms: the fp32 input and normalised copy, and the output in the compute dtype
    norms = 2 * (8 * h + compute * h)
    # q and k before RoPE (h + kv), q, k, v into sdpa (h + 2kv), sdpa's output and o_proj's input (2h),
    # SwiGLU: gate, silu(gate), up and their product into down_proj (4 × intermediate)
    per_layer = norms + compute * (4 * h + 3 * kv + 4 * inter)
    layer_input = weight_bytes * h  # the residual stream, in the weights' dtype
    kept = int(cfg.train.per_device_batch_size) * ANSWER_TOKENS
    head = kept * shape.vocab * (compute + 4 + 4)  # kept logits, their fp32 log-softmax and its gradient
    outside = tokens * (layer_input + 8 * h + compute * h) + head  # embeddings' output, the final norm
    without = tokens * (shape.layers + 1) * per_layer + outside  # + one layer's working set in backward
    with_ckpt = tokens * (shape.layers * layer_input + 2 * per_layer) + outside  # + one layer recomputed
    return float(without), float(with_ckpt)


def device_memory(cfg: DictConfig, shape: ModelShape) -> Memory:
    """Bytes on one device (a GPU, or a CPU process) for training state and activations."""
    s = cfg.strategy
    world = int(s.nproc_per_node) * int(s.nnodes)
    weight_bytes = BYTES[cfg.model.dtype]
    shard = world if s.name in SHARDING else 1
    mixed = bool(cfg.train.get("bf16")) and weight_bytes == 4
    if s.name == "deepspeed_zero3" and mixed:  # bf16 weights and gradients, fp32 master + moments
        weights, grads, optim = 2 * shape.params, 2 * shape.trainable, 12 * shape.trainable
    else:
        weights, grads, optim = weight_bytes * shape.params, weight_bytes * shape.trainable, \
            2 * weight_bytes * shape.trainable
    extra = 0.0
    if s.name == "fsdp":
        extra = 3 * shape.layer_params * (2 if mixed else weight_bytes)
        if accumulation_steps(cfg) > 1:  # unsharded gradients, in the compute dtype, kept while sync is off
            extra += shape.trainable * (2 if mixed else weight_bytes)
    elif mixed:
        extra = 2.0 * shape.params  # autocast's cached bf16 weights
    if s.name == "ddp":
        extra += grads
    acts, acts_ckpt = activation_bytes(cfg, shape)
    return Memory(weights / shard, grads / shard, optim / shard, extra, acts, acts_ckpt)


def accumulation_steps(cfg: DictConfig) -> int:
    """Micro-batches per optimizer step: global batch / (per-device batch × processes)."""
    world = int(cfg.strategy.nproc_per_node) * int(cfg.strategy.nnodes)
    return max(1, int(cfg.train.global_batch_size) // (int(cfg.train.per_device_batch_size) * world))


def prepare_device_memory(cfg: DictConfig, shape: ModelShape) -> float:
    """Bytes one GPU holds in the prepare job's scoring passes (every rank loads the whole model): the load in
    `model.dtype`, then scoring in the strategy's arithmetic — bf16-cast parameters under FSDP/ZeRO-3 bf16, or
    the loaded weights plus autocast's cached bf16 copy of them — and one layer's working set for
    `train.eval_batch_size` × `data.max_length` tokens (no gradients)."""
    weight_bytes = BYTES[cfg.model.dtype]
    loaded = weight_bytes * shape.params
    mixed = bool(cfg.train.get("bf16")) and weight_bytes == 4
    if mixed and cfg.strategy.name in SHARDING:
        scoring = 2 * shape.params
    else:
        scoring = loaded + (2 * shape.params if mixed else 0)
    compute = 2 if cfg.train.get("bf16") else weight_bytes
    tokens = int(cfg.train.eval_batch_size) * int(cfg.data.max_length)
    working = tokens * compute * (2 * shape.hidden + 2 * shape.kv_hidden + 3 * shape.intermediate)
    head = int(cfg.train.eval_batch_size) * ANSWER_TOKENS * shape.vocab * (compute + 4)
    return float(max(loaded, scoring + working + head))


def needs_checkpointing(cfg: DictConfig, memory: Memory) -> bool:
    """`model.gradient_checkpointing` when set; else on only where the device would not hold the job
    without it (a GPU's usable memory, `plan.gpu_mem_gb`): it costs a third more compute."""
    set_by_user = cfg.model.get("gradient_checkpointing")
    if set_by_user is not None:
        return bool(set_by_user)
    if not on_gpu(cfg):
        return False
    return memory.total(False) > GPU_USABLE * float(cfg.plan.gpu_mem_gb) * GB


def rank0_loads(cfg: DictConfig) -> bool:
    """Only rank 0 reads the training model's weights: FSDP with cpu_ram_efficient_loading (the others start
    on the meta device, trainers/job/prepare.py), or ZeRO-3 (transformers loads rank 0's copy under zero.Init)."""
    s = cfg.strategy
    fsdp = s.get("fsdp")
    return bool(s.get("deepspeed")) or bool(fsdp and fsdp.fsdp_config.get("cpu_ram_efficient_loading"))


def weights_file_bytes(cfg: DictConfig, shape: ModelShape) -> float:
    """The base model's weights on disk: its parameters in the checkpoint's dtype (else `model.dtype`)."""
    return float(BYTES[shape.checkpoint_dtype or cfg.model.dtype] * shape.params)


def host_memory(cfg: DictConfig, shape: ModelShape, memory: Memory, checkpointing: bool) -> float:
    """The peak of a grid point's jobs (its prepare job and its training job) in host bytes on one node.
    Every process holds its runtime; on a CPU also its model, training state and activations. On GPUs every
    rank reads the weights file straight onto its GPU (the prepare job's scoring passes, a single/DDP training
    job): the node's page cache holds the file once; where only rank 0 reads the training model (FSDP,
    ZeRO-3) it materialises it whole in `model.dtype` on the CPU for sharding."""
    n = int(cfg.strategy.nproc_per_node)
    if not on_gpu(cfg):
        return n * (RUNTIME_GB * GB + memory.total(checkpointing))
    read = n * (RUNTIME_GB + CUDA_HOST_GB) * GB + weights_file_bytes(cfg, shape)
    return read + (BYTES[cfg.model.dtype] * shape.params if rank0_loads(cfg) else 0)


def checkpoint_bytes(cfg: DictConfig, shape: ModelShape) -> float:
    """One checkpoint on disk, all ranks together: weights and AdamW state (the adapter's alone under LoRA)."""
    weight_bytes = BYTES[cfg.model.dtype]
    if cfg.model.get("lora"):
        return float(3 * weight_bytes * shape.trainable)
    if cfg.strategy.name == "deepspeed_zero3" and cfg.train.get("bf16") and weight_bytes == 4:
        return float(2 * shape.params + 12 * shape.params)
    return float(3 * weight_bytes * shape.params)


def save_window_s(signal_delay_s: float) -> float:
    """How long the save at SLURM's warning may take: the warning's lead less what the requeue needs after it."""
    return max(10.0, float(signal_delay_s) - REQUEUE_S)


def save_seconds(cfg: DictConfig, checkpoint: float) -> float:
    """One checkpoint's write time at the assumed bandwidth `plan.write_gb_per_s`."""
    return checkpoint / (float(cfg.plan.get("write_gb_per_s") or 1.0) * GB)


def periodic_save_min(cfg: DictConfig, checkpoint: float) -> float:
    """Minutes between the job's periodic saves (0: none): `train.checkpoint_every_min` where set; else (null)
    `plan.periodic_save_min` on SLURM where the warning's save would not fit its window with room to spare."""
    if cfg.train.get("checkpoint_every_min") is not None:
        return float(cfg.train.checkpoint_every_min)
    delay = cfg.plan.get("signal_delay_s")
    if not delay or SAVE_HEADROOM * save_seconds(cfg, checkpoint) <= save_window_s(delay):
        return 0.0
    return float(cfg.plan.get("periodic_save_min") or 30)


def job_periodic_save_min(cfg: DictConfig) -> float:
    """`periodic_save_min` of a running job (its model's shape read from its config.json, no weights)."""
    if cfg.train.get("checkpoint_every_min") is not None or not cfg.plan.get("signal_delay_s"):
        return float(cfg.train.get("checkpoint_every_min") or 0)
    return periodic_save_min(cfg, checkpoint_bytes(cfg, model_shape(cfg)))


# ------------------------------------------------------------------------------------------- steps


def train_questions(cfg: DictConfig) -> int | None:
    """Training questions: data.n_train, else counted from the data files (None where they cannot be read)."""
    if cfg.data.get("n_train") is not None:
        return int(cfg.data.n_train)
    return _count_train(json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True))


@lru_cache(maxsize=8)
def _count_train(data_json: str) -> int | None:
    from trainers.job.prepare import load_items

    try:
        train_items, _ = load_items(OmegaConf.create(json.loads(data_json)))
    except Exception:  # the data is not here (a plan made away from the data): steps unknown
        return None
    return len(train_items)


def training_steps(cfg: DictConfig, n_train: int | None) -> int | None:
    """Optimizer steps as the HF Trainer counts them."""
    t = cfg.train
    if int(t.max_steps) > 0:
        return int(t.max_steps)
    if n_train is None:
        return None
    world = int(cfg.strategy.nproc_per_node) * int(cfg.strategy.nnodes)
    batches = math.ceil(n_train / (int(t.per_device_batch_size) * world))
    per_epoch = max(batches // (int(t.global_batch_size) // (int(t.per_device_batch_size) * world)), 1)
    return math.ceil(float(t.epochs) * per_epoch)


# ------------------------------------------------------------------------------------------- the plan


def slurm_request(cfg: DictConfig, host_per_node: float) -> dict[str, int]:
    """What a SLURM job of this plan asks for per node: memory with headroom, GPUs, CPUs."""
    return {"mem_gb": max(1, math.ceil(REQUEST_HEADROOM * host_per_node / GB)),
            "gpus_per_node": gpus_per_node(cfg),
            "cpus_per_task": int(cfg.strategy.cpus_per_node)}


def make_plan(cfg: DictConfig, n_train: int | None = None) -> Plan:
    """The plan of one job (`n_train`: its training questions when already known)."""
    shape = model_shape(cfg)
    memory = device_memory(cfg, shape)
    checkpointing = needs_checkpointing(cfg, memory)
    host = host_memory(cfg, shape, memory, checkpointing)
    steps = training_steps(cfg, train_questions(cfg) if n_train is None else n_train)
    tokens = None if steps is None else steps * int(cfg.train.global_batch_size) * int(cfg.data.max_length)
    s = cfg.strategy
    checkpoint = checkpoint_bytes(cfg, shape)
    return Plan(shape=shape, strategy=s.name, processes_per_node=int(s.nproc_per_node), nodes=int(s.nnodes),
                on_gpu=on_gpu(cfg), device=memory, gradient_checkpointing=checkpointing, host_per_node=host,
                checkpoint=checkpoint, steps=steps, tokens=tokens, request=slurm_request(cfg, host),
                save_s=save_seconds(cfg, checkpoint), periodic_save_min=periodic_save_min(cfg, checkpoint),
                prepare_device=prepare_device_memory(cfg, shape))


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 2**20:.0f} MB"


def _fsdp_alternative(cfg: DictConfig, shape: ModelShape) -> str:
    """`strategy=fsdp strategy.nproc_per_node=8 (N GB per GPU)`: the sharded setting that would fit."""
    alt = OmegaConf.merge(cfg, {"strategy": {"name": "fsdp", "nproc_per_node": 8, "gpus_per_node": 8},
                                "model": {"gradient_checkpointing": None}})
    memory = device_memory(alt, shape)
    return f"strategy=fsdp strategy.nproc_per_node=8 ({_gb(memory.total(needs_checkpointing(alt, memory)))} per GPU)"


def check_fits(cfg: DictConfig, plan: Plan) -> None:
    """Refuse, in one line naming what to change, a job its GPU or its partition cannot hold."""
    limits = cfg.get("plan", {}).get("limits") or {}
    if plan.on_gpu:
        capacity = GPU_USABLE * float(cfg.plan.gpu_mem_gb) * GB
        if plan.device_total > capacity:
            m = plan.device
            acts = m.activations_ckpt if plan.gradient_checkpointing else m.activations
            fix = ("model.gradient_checkpointing=null (on where needed), or a smaller train.per_device_batch_size"
                   if not plan.gradient_checkpointing and m.total(True) <= capacity
                   else _fsdp_alternative(cfg, plan.shape) if plan.strategy not in SHARDING
                   else "more processes (strategy.nproc_per_node, strategy.nnodes)")
            raise ConfigError(
                f"strategy={plan.strategy}: {plan.shape.name} needs {_gb(plan.device_total)} per GPU (weights "
                f"{_gb(m.weights)}, gradients {_gb(m.gradients)}, AdamW {_gb(m.optimizer)}, activations {_gb(acts)}"
                f"{', checkpointed' if plan.gradient_checkpointing else ''}) but one GPU holds "
                f"{_gb(capacity)} of plan.gpu_mem_gb={cfg.plan.gpu_mem_gb}; use {fix}, or LoRA (model.lora)")
        if plan.prepare_device > capacity:
            raise ConfigError(
                f"the prepare job's scoring passes load {plan.shape.name} whole on every GPU: "
                f"{_gb(plan.prepare_device)} but one GPU holds {_gb(capacity)} of plan.gpu_mem_gb="
                f"{cfg.plan.gpu_mem_gb}; use a smaller train.eval_batch_size, or model.dtype=bfloat16")
    request = effective_request(cfg, plan)
    for key, value in request.items():
        limit = limits.get(key)
        if limit is not None and value is not None and value > limit:
            raise ConfigError(f"the SLURM request hydra.launcher.{key}={value} is above the partition's {limit} "
                              f"(plan.limits.{key}); lower it, or use more nodes (strategy.nnodes) or another "
                              "partition (hydra.launcher.partition and plan.limits)")


LAUNCHER_KINDS = ("local", "joblib", "submitit_local", "slurm")


def launcher_kind(cfg: DictConfig) -> str:
    """What runs the job: `launcher.kind`, which each conf/launcher/*.yaml sets (one of LAUNCHER_KINDS)."""
    kind = str((cfg.get("launcher") or {}).get("kind") or "local")
    if kind not in LAUNCHER_KINDS:
        raise ConfigError(f"launcher.kind={kind} is not a launcher; use launcher= one of {', '.join(LAUNCHER_KINDS)}")
    return kind


def on_slurm(cfg: DictConfig) -> bool:
    """The job's launcher submits it to SLURM (launcher=slurm)."""
    return launcher_kind(cfg) == "slurm"


def effective_request(cfg: DictConfig, plan: Plan) -> dict[str, int]:
    """The request a SLURM job gets: the user's `hydra.launcher.*` where set, the plan's elsewhere
    (empty off SLURM)."""
    if not on_slurm(cfg):
        return {}
    launcher = cfg.hydra.launcher
    return {key: (launcher.get(key) if launcher.get(key) is not None else value)
            for key, value in plan.request.items()}


def plan_lines(cfg: DictConfig, plan: Plan) -> list[str]:
    """The plan of one job as `make plan` prints it."""
    m, shape = plan.device, plan.shape
    where = "per GPU" if plan.on_gpu else "per process (CPU)"
    lora = f", LoRA {shape.trainable:,} trainable" if shape.trainable != shape.params else ""
    lines = [
        f"model {shape.name}: {shape.params:,} parameters{lora}, {shape.layers} layers, hidden {shape.hidden}, "
        f"vocabulary {shape.vocab:,}; {cfg.model.dtype} weights{', bf16 compute' if cfg.train.get('bf16') else ''}",
        f"strategy {plan.strategy}: {plan.processes_per_node} process(es) per node × {plan.nodes} node(s)"
        f"{f', {plan.gpus} GPU(s)' if plan.on_gpu else ', CPU'}; micro-batch {cfg.train.per_device_batch_size} × "
        f"{cfg.data.max_length} tokens",
        f"memory {where}: weights {_gb(m.weights)}, gradients {_gb(m.gradients)}, AdamW {_gb(m.optimizer)}, "
        f"other {_gb(m.extra)}, activations {_gb(m.activations)} ({_gb(m.activations_ckpt)} checkpointed) "
        f"-> {_gb(m.total(False))} without / {_gb(m.total(True))} with gradient checkpointing; "
        f"checkpointing {'on' if plan.gradient_checkpointing else 'off'}",
        f"prepare job (every rank scores with the whole model) {where}: {_gb(plan.prepare_device)}",
        f"host memory per node: {_gb(plan.host_per_node)}; checkpoint {_gb(plan.checkpoint)}; steps "
        f"{plan.steps if plan.steps is not None else 'unknown (data not readable here)'}",
    ]
    delay = cfg.plan.get("signal_delay_s")
    if delay:
        bandwidth = cfg.plan.get("write_gb_per_s") or 1.0
        lines.append(f"save at SLURM's warning: ~{plan.save_s:.0f} s at plan.write_gb_per_s={bandwidth} "
                     f"(×{SAVE_HEADROOM} room) in a {save_window_s(delay):.0f} s window (signal_delay_s {delay} "
                     f"less {REQUEUE_S:.0f} s for the requeue); periodic saves: "
                     + (f"every {plan.periodic_save_min:g} min" if plan.periodic_save_min else "none"))
    request = effective_request(cfg, plan)
    if request:
        lines.append("SLURM request per node: " + ", ".join(
            f"{k}={v}{'' if (cfg.hydra.launcher.get(k) is not None) else ' (plan)'}" for k, v in request.items()))
    return lines



def gradient_checkpointing(cfg: DictConfig) -> bool:
    """Whether the job trains with gradient checkpointing: the user's setting, else the plan's need."""
    if cfg.model.get("gradient_checkpointing") is not None:
        return bool(cfg.model.gradient_checkpointing)
    return on_gpu(cfg) and needs_checkpointing(cfg, device_memory(cfg, model_shape(cfg)))
