"""Everything a job needs before its first step, cached so that a grid does it once.

    embedded world (if used) → tokenizer → tokenized data (cached) → model
    → base-model scores on the eval set (cached) → reference log-probs of the train set (cached)

The sweep calls `prepare` once per (model, data) before it launches; every job then calls it
again and only reads the caches. Keys cover whatever changes the numbers (see trainers/model/reference.py), so a
changed model, tokenizer, data file or template never reuses a stale entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from trainers.data.mcq import McqItem, drop_overlap, load_mcq, read_subject_info, sample_items, split_train_eval
from trainers.data.prompts import PromptFormat, Sample, encode_items, letter_token_ids
from trainers.job.validate import check_batch_fits, validate_paths
from trainers.model.losses import REFERENCE_METHODS
from trainers.model.reference import cached_scores, load_scores, model_fingerprint, scores_key
from trainers.model.scoring import Scores, score_sharded
from trainers.runtime.errors import ConfigError
from trainers.runtime.process import barrier, broadcast_from_main, dist_ready, is_main_process
from trainers.runtime.run_dir import atomic_write_text
from trainers.world import ensure_embedded_world, seeded_world

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A job's inputs; the `*_pass` fields say whether this call computed or reused each cache."""

    tokenizer: PreTrainedTokenizerBase
    pad_id: int
    letter_ids: list[int]
    train_samples: list[Sample]
    eval_samples: list[Sample]
    model: torch.nn.Module | None  # None with keep_model=False (the job loads its own, sharded)
    base: Scores
    ref_logps: list[float]
    ref_token_logps: list[list[float]] | None  # per answer token, for token-level losses (kl_sft)
    tokenize_pass: str  # "computed" | "cached"
    base_pass: str  # "computed" | "cached"
    reference_pass: str  # "computed" | "cached" | "none"
    subject_info: dict[str, dict[str, str]] | None = None  # eval subjects' names and categories (data.subject_info)
    data_warnings: list[str] = field(default_factory=list)  # rejected rows and the like: the report lists them

    @property
    def base_accuracy(self) -> float:
        return self.base.accuracy(self.eval_samples)


def needs_reference(cfg: DictConfig) -> bool:
    """The loss reads reference log-probs, or m_theta is tracked (it needs them for every method)."""
    return cfg.method.name in REFERENCE_METHODS or bool(cfg.train.track_m_theta)


def load_items(data: DictConfig) -> tuple[list[McqItem], list[McqItem]]:
    """Train and eval items per the data config: two splits, or one split cut in two without overlap.

    ``data.columns`` (optional) maps the files' column names to the canonical ones;
    ``data.stratify_by_subject`` (optional) keeps each subject's share in eval and in a sampled train.
    """
    columns = data.get("columns")
    columns = OmegaConf.to_container(columns) if isinstance(columns, DictConfig) else columns
    stratify = bool(data.get("stratify_by_subject", False))

    def load(split_key: str) -> tuple[list[McqItem], str]:
        items, report = load_mcq(data.path, data.get(split_key), data.get("subjects"), columns=columns,
                                 split_field=f"data.{split_key}")
        for line in report.lines():
            log.warning(line)
        return items, report.source

    train_items, source = load("train_split")
    if data.get("eval_split"):
        eval_items, eval_source = load("eval_split")
        source = f"train from {source}, eval from {eval_source}"
        eval_items = sample_items(eval_items, data.n_eval, data.sample_seed, field="data.n_eval", stratify=stratify)
        train_items, n_dropped = drop_overlap(train_items, eval_items)
        if n_dropped:
            log.warning("dropped %d train questions that also appear in the eval split", n_dropped)
        train_items = sample_items(train_items, data.n_train, data.sample_seed, field="data.n_train",
                                   stratify=stratify)
    else:
        if data.get("n_eval") is None:
            raise ConfigError("data.n_eval is null but data.eval_split is not set: give one of them")
        train_items, eval_items = split_train_eval(train_items, data.n_train, data.n_eval, data.sample_seed,
                                                   stratify=stratify)
    log.info("data %s: %d train and %d eval questions (%s%s)", data.get("name", ""), len(train_items),
             len(eval_items), source, ", stratified by subject" if stratify else "")
    return train_items, eval_items


def prompt_format(data: DictConfig) -> PromptFormat:
    return PromptFormat(
        prompt_template=data.prompt_template,
        answer_template=data.answer_template,
        system_prompt=data.get("system_prompt"),
        max_length=data.max_length,
        use_chat_template=data.get("use_chat_template", True),
    )


def _data_files_stamp(path: str) -> list[list[Any]]:
    """(name, size, mtime) of the data files: an edited file changes the tokenized-data key."""
    root = Path(path)
    if not root.exists():
        return [[str(path)]]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root) if p != root else p.name), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files if p.suffix in {".csv", ".jsonl"}]


def _samples_to_json(samples: list[Sample]) -> list[list[Any]]:
    return [[s.id, s.subject, s.input_ids, s.prompt_len, s.gold] for s in samples]


def _samples_from_json(rows: list[list[Any]]) -> list[Sample]:
    return [Sample(*row) for row in rows]


def tokenized_data(
    cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, fingerprint: str
) -> tuple[list[Sample], list[Sample], bool]:
    """(train samples, eval samples, computed): tokenized once per (tokenizer, data, template)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    payload = json.dumps({"model": fingerprint, "data": data, "files": _data_files_stamp(cfg.data.path)},
                         sort_keys=True)
    path = Path(cfg.paths.cache_dir) / "tokenized" / f"{hashlib.sha256(payload.encode()).hexdigest()[:32]}.json"

    def load() -> tuple[list[Sample], list[Sample]]:
        cached = json.loads(path.read_text())
        for line in cached["report"]:
            log.warning(line)
        return _samples_from_json(cached["train"]), _samples_from_json(cached["eval"])

    if path.exists():
        return (*load(), False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            return (*load(), False)
        handler, trainers_log = _CollectWarnings(), logging.getLogger("trainers")
        trainers_log.addHandler(handler)
        try:
            train_items, eval_items = load_items(cfg.data)
            fmt = prompt_format(cfg.data)
            train_samples = encode_items(train_items, fmt, tokenizer)
            eval_samples = encode_items(eval_items, fmt, tokenizer)
        finally:
            trainers_log.removeHandler(handler)
        atomic_write_text(path, json.dumps({
            "report": handler.lines, "train": _samples_to_json(train_samples), "eval": _samples_to_json(eval_samples),
        }))
    return train_samples, eval_samples, True


class _CollectWarnings(logging.Handler):
    """Keeps the data-loading warnings so that a cached load can repeat them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def load_dtype(dtype: torch.dtype) -> torch.dtype | str:
    """The dtype the checkpoint is read in: its own ("auto": config.json's, else the weights') when the model
    trains in fp32, so that a bf16 checkpoint is cast on the device instead of in host memory; else the
    training dtype itself (reading an fp32 checkpoint into bf16 converts tensor by tensor, never wider)."""
    return "auto" if dtype == torch.float32 else dtype


def receives_its_shards(cfg: DictConfig) -> bool:
    """This rank builds the training model on the meta device and receives its shards from rank 0: under FSDP
    with `cpu_ram_efficient_loading`, accelerate broadcasts rank 0's weights when it shards the model
    (`fsdp2_load_full_state_dict`), so only rank 0 reads the checkpoint (transformers 5 reads it on every
    rank, whatever accelerate's variables say)."""
    fsdp = cfg.strategy.get("fsdp") if cfg.get("strategy") is not None else None
    return bool(fsdp and fsdp.fsdp_config.get("cpu_ram_efficient_loading") and dist_ready()
                and not is_main_process())


def load_model(cfg: DictConfig, sharded: bool = False, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The checkpoint in `model.dtype` on `device`, wrapped with LoRA adapters when `model.lora` is set.

    The weights are read straight onto `device` (on a GPU, host memory holds only the checkpoint file's pages,
    shared by the node's processes) in the checkpoint's own dtype where training keeps fp32 weights, then cast
    on the device: a bf16 checkpoint never becomes an fp32 copy in host memory (`load_dtype`).
    LoRA's B matrices start at zero, so the wrapped model computes exactly the base model: the
    cached reference log-probs and base scores stay valid and m_theta still starts at 0.
    `sharded`: the training model of an FSDP/ZeRO-3 job, loaded once TrainingArguments exist, on the CPU
    (accelerate shards it from there); under FSDP only rank 0 reads the weights (`receives_its_shards`). The
    scoring passes need the whole model on every rank.
    """
    dtype = getattr(torch, cfg.model.dtype)
    log.info("Instantiating model <%s> (%s, %s)", cfg.model.name, cfg.model.dtype, cfg.model.attn_implementation)
    if sharded and receives_its_shards(cfg):
        from accelerate import init_empty_weights

        config = AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        with init_empty_weights():  # parameters on meta; buffers real (rotary inv_freq is never broadcast)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                     attn_implementation=cfg.model.attn_implementation,
                                                     trust_remote_code=cfg.model.trust_remote_code)
        model.tie_weights()  # init_empty_weights leaves a tied head as a parameter of its own
    else:
        zero3 = sharded and cfg.strategy.name == "deepspeed_zero3"  # zero.Init partitions as it loads: no cast after
        read_as = dtype if zero3 else load_dtype(dtype)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.path,
            dtype=read_as,
            device_map=None if sharded else {"": torch.device(device)},
            attn_implementation=cfg.model.attn_implementation,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        if read_as != dtype and model.dtype != dtype:
            model.to(dtype)  # exact for an upcast; buffers (rotary inv_freq) are fp32 either way
            model.config.dtype = dtype  # as a direct load in `dtype` records it (save_pretrained writes it)
    lora = cfg.model.get("lora")
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ConfigError("model.lora is set but peft is not installed; pip install -e '.[lora]'") from exc
        log.info("Adding LoRA adapters <r=%s, alpha=%s, modules=%s>", lora.r, lora.alpha, list(lora.target_modules))
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
        ))
    return model


def scoring_precision(cfg: DictConfig, device: torch.device) -> tuple[str, contextlib.AbstractContextManager]:
    """(cache-key dtype, context) of the scoring passes: bf16 autocast where training computes in bf16
    (`train.bf16`: the Trainer autocasts on a GPU and on a CPU alike), so that the reference and the policy
    at step 0 agree (m_theta starts at 0)."""
    if cfg.train.get("bf16"):
        return f"{cfg.model.dtype}+autocast-bfloat16", torch.autocast(device.type, dtype=torch.bfloat16)
    return cfg.model.dtype, contextlib.nullcontext()


def _cached_or_sharded(cache_dir: Path, key: str, compute) -> tuple[Scores, bool]:
    """`cached_scores`, with several processes: rank 0 looks the key up, every rank joins the sharded
    computation if it is missing, rank 0 writes it."""
    if not dist_ready():
        return cached_scores(cache_dir, key, compute)
    if broadcast_from_main(load_scores(cache_dir, key) is not None if is_main_process() else None):
        found = load_scores(cache_dir, key)
        if found is not None:
            return found, False
    scores = compute()
    if is_main_process():
        cached_scores(cache_dir, key, lambda: scores)
    barrier()
    return scores, True


def prepare(
    cfg: DictConfig, device: torch.device | str = "cpu", reference: bool | None = None, keep_model: bool = True,
) -> Prepared:
    """Build or load every cached input of the job `cfg` (reference pass if `reference`, default: if needed).

    The model is loaded onto `device` only when a pass needs it or `keep_model` asks for it. With
    several processes the passes are sharded across them (`trainers.model.scoring.score_sharded`).
    """
    device = torch.device(device)
    if cfg.model.get("embedded"):
        log.info("Preparing the embedded world <%s>", cfg.paths.embedded_dir)
        ensure_embedded_world(Path(cfg.paths.embedded_dir), seeded_world(int(cfg.data.get("world_seed") or 0)))
    validate_paths(cfg)
    cache_dir = Path(cfg.paths.cache_dir)

    log.info("Instantiating tokenizer <%s>", cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    letters = letter_token_ids(tokenizer)
    fingerprint = model_fingerprint(Path(cfg.model.path), cache_dir / "fingerprints.json")
    log.info("Loading data <%s> from %s", cfg.data.name, cfg.data.path)
    subject_info = read_subject_info(cfg.data.path, cfg.data.get("subject_info"))
    collected, trainers_log = _CollectWarnings(), logging.getLogger("trainers")  # the data's, computed or cached
    trainers_log.addHandler(collected)
    try:
        train_samples, eval_samples, tokenized = tokenized_data(cfg, tokenizer, fingerprint)
    finally:
        trainers_log.removeHandler(collected)
    check_batch_fits(cfg, len(train_samples), f"the {len(train_samples)}")  # data.n_train null: known only now
    log.info("Data: %d train and %d eval questions (tokenized: %s)", len(train_samples), len(eval_samples),
             "computed" if tokenized else "cached")

    loaded: list[torch.nn.Module] = []

    def model() -> torch.nn.Module:
        if not loaded:
            loaded.append(load_model(cfg, device=device))
        return loaded[0]

    key_dtype, precision = scoring_precision(cfg, device)

    def scores(kind: str, samples: list[Sample]) -> tuple[Scores, bool]:
        key = scores_key(kind, fingerprint, key_dtype, cfg.model.attn_implementation, samples)

        def compute() -> Scores:
            with precision:
                return score_sharded(model(), samples, letters, pad_id, cfg.train.eval_batch_size, progress=kind)

        return _cached_or_sharded(cache_dir / "scores", key, compute)

    base, base_computed = scores("base_eval", eval_samples)
    log.info("Base model accuracy: %.4f on %d questions (%s)", base.accuracy(eval_samples), len(eval_samples),
             "computed" if base_computed else "cached")
    if needs_reference(cfg) if reference is None else reference:
        ref, ref_computed = scores("reference", train_samples)
        ref_logps, reference_pass = ref.logps.tolist(), "computed" if ref_computed else "cached"
        ref_token_logps = ref.tokens_per_sample(train_samples)
    else:
        ref_logps, reference_pass, ref_token_logps = [0.0] * len(train_samples), "none", None
    return Prepared(
        tokenizer=tokenizer, pad_id=pad_id, letter_ids=letters, train_samples=train_samples,
        eval_samples=eval_samples, model=model() if keep_model else None, base=base, ref_logps=ref_logps,
        ref_token_logps=ref_token_logps,
        tokenize_pass="computed" if tokenized else "cached",
        base_pass="computed" if base_computed else "cached", reference_pass=reference_pass,
        subject_info=None if subject_info is None else
        {s: subject_info.get(s, {"name": s, "category": ""}) for s in sorted({x.subject for x in eval_samples})},
        data_warnings=list(dict.fromkeys(collected.lines)),
    )
