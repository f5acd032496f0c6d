"""Everything a job needs before its first step, cached so that a grid does it once.

    embedded world (if used) → tokenizer → tokenized data (cached) → model
    → base-model scores on the eval set (cached) → reference log-probs of the train set (cached)

The sweep calls `prepare` once per (model, data) before it launches; every job then calls it
again and only reads the caches. Keys cover whatever changes the numbers (see trainers/model/reference.py), so a
changed model, tokenizer, data file or template never reuses a stale entry.
"""

from __future__ import annotations

import contextlib
import copy
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

from trainers.data.mcq import (
    McqItem,
    drop_overlap,
    load_mcq,
    read_subject_info,
    sample_items,
    split_files,
    split_train_eval,
)
from trainers.data.prompts import PromptFormat, Sample, encode_items, letter_token_ids
from trainers.data.selection import SELECT_FRACTION, SELECT_SEED
from trainers.job.validate import check_batch_fits, validate_paths
from trainers.model.reference import (
    cached_scores,
    file_digests,
    load_scores,
    model_fingerprint,
    named_digest,
    scores_key,
    tokenizer_fingerprint,
)
from trainers.model.scoring import Scores, score_sharded
from trainers.runtime.collectives import all_ranks_agree, barrier, dist_ready
from trainers.runtime.errors import ConfigError
from trainers.runtime.methods import METHODS
from trainers.runtime.process import is_main_process
from trainers.runtime.run_dir import atomic_write_text
from trainers.world.build import ensure_embedded_world, seeded_world

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
    fingerprints: dict[str, str] | None = None  # what the job ran on, by content (`input_fingerprints`)
    data_warnings: list[str] = field(default_factory=list)  # rejected rows and the like: the report lists them

    @property
    def base_accuracy(self) -> float:
        return self.base.accuracy(self.eval_samples)


def needs_reference(cfg: DictConfig) -> bool:
    """The loss reads reference log-probs, or m_theta is tracked (it needs them for every method)."""
    return METHODS[cfg.method.name].reads_reference or bool(cfg.train.track_m_theta)


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


DATA_CHOICES = {
    "train_split": None, "eval_split": None, "subjects": None, "columns": None, "n_train": None, "n_eval": None,
    "sample_seed": 0, "stratify_by_subject": False, "select_fraction": SELECT_FRACTION, "select_seed": SELECT_SEED,
    "prompt_template": None, "answer_template": None, "system_prompt": None, "max_length": None,
    "use_chat_template": True,
}
"""The data settings that decide which questions a job trains and is scored on, their split, and how they become
prompts, with the defaults `load_items`, `prompt_format` and the selection split apply when one is absent."""


def data_fingerprint(data: DictConfig, memo_path: Path) -> str:
    """Hash of the data a job ran on: the content of every file it reads (by its name under the dataset root,
    not its path: the same files anywhere give the same hash) and DATA_CHOICES. Two runs agree on it exactly when
    they saw the same questions, split the same way, in the same prompts."""
    files = split_files(data.path, data.get("train_split"), data.get("subjects"))
    if data.get("eval_split"):
        files += split_files(data.path, data.eval_split, data.get("subjects"), split_field="data.eval_split")
    files = sorted(dict(files).items())
    digests = file_digests([path for _, path in files], memo_path)
    resolved = OmegaConf.to_container(data, resolve=True)
    assert isinstance(resolved, dict)
    choices = {k: default if resolved.get(k) is None else resolved[k] for k, default in DATA_CHOICES.items()}
    named = [(label, d) for (label, _), d in zip(files, digests, strict=True)]
    return named_digest([*named, ("choices", json.dumps(choices, sort_keys=True))])


def input_fingerprints(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, model_fp: str,
                       data_fp: str) -> dict[str, str]:
    """result.json's content fingerprints of what a job ran on (the report keys its settings on them): the data
    (`data_fingerprint`, kept with the tokenized data), the tokenizer's files and the whole checkpoint
    (`model_fingerprint`, the caches' key). Each file is hashed once per machine
    (trainers.model.reference.file_digests), so this costs a 7B job a few stat calls."""
    memo = Path(cfg.paths.cache_dir) / "fingerprints.json"
    return {
        "data_fingerprint": data_fp,
        "tokenizer_fingerprint": tokenizer_fingerprint(Path(cfg.model.path), list(tokenizer.vocab_files_names.values()),
                                                       memo),
        "model_fingerprint": model_fp,
    }


def _samples_to_json(samples: list[Sample]) -> list[list[Any]]:
    return [[s.id, s.subject, s.input_ids, s.prompt_len, s.gold] for s in samples]


def _samples_from_json(rows: list[list[Any]]) -> list[Sample]:
    return [Sample(*row) for row in rows]


def tokenized_data(
    cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, fingerprint: str
) -> tuple[list[Sample], list[Sample], bool, str]:
    """(train samples, eval samples, computed, data fingerprint): tokenized once per (tokenizer, data, template).

    The entry keeps the data's `data_fingerprint`, so a job that finds it cached neither lists nor hashes the data
    files again (nor asks the hub about an hf:// data set)."""
    memo = Path(cfg.paths.cache_dir) / "fingerprints.json"
    data = OmegaConf.to_container(cfg.data, resolve=True)
    payload = json.dumps({"model": fingerprint, "data": data, "files": _data_files_stamp(cfg.data.path)},
                         sort_keys=True)
    path = Path(cfg.paths.cache_dir) / "tokenized" / f"{hashlib.sha256(payload.encode()).hexdigest()[:32]}.json"

    def load() -> tuple[list[Sample], list[Sample], bool, str]:
        cached = json.loads(path.read_text())
        for line in cached["report"]:
            log.warning(line)
        data_fp = cached.get("data_fingerprint") or data_fingerprint(cfg.data, memo)  # entries from before it
        return _samples_from_json(cached["train"]), _samples_from_json(cached["eval"]), False, data_fp

    if path.exists():
        return load()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            return load()
        handler, trainers_log = _CollectWarnings(), logging.getLogger("trainers")
        trainers_log.addHandler(handler)
        try:
            train_items, eval_items = load_items(cfg.data)
            fmt = prompt_format(cfg.data)
            train_samples = encode_items(train_items, fmt, tokenizer)
            eval_samples = encode_items(eval_items, fmt, tokenizer)
        finally:
            trainers_log.removeHandler(handler)
        data_fp = data_fingerprint(cfg.data, memo)
        atomic_write_text(path, json.dumps({
            "report": handler.lines, "train": _samples_to_json(train_samples), "eval": _samples_to_json(eval_samples),
            "data_fingerprint": data_fp,
        }))
    return train_samples, eval_samples, True, data_fp


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


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a strategy's forward: parameters read in `param_dtype`, under bf16 autocast or not."""

    model_dtype: torch.dtype
    param_dtype: torch.dtype
    autocast: bool

    @property
    def key(self) -> str:
        """The cache-key dtype: the checkpoint dtype, then what the forward does to it (fp32 keys unchanged)."""
        key = str(self.model_dtype).removeprefix("torch.")
        if self.param_dtype != self.model_dtype:
            key += f"+params-{str(self.param_dtype).removeprefix('torch.')}"
        return key + ("+autocast-bfloat16" if self.autocast else "")


def training_precision(cfg: DictConfig) -> Precision:
    """How the strategy computes with the weights under `train.bf16`, read from the libraries it runs through:
    single/DDP keep `model.dtype` weights under bf16 autocast (accelerate's native AMP); FSDP2's
    mixed-precision policy all-gathers the parameters cast to bf16 (buffers stay) and accelerate autocasts too;
    DeepSpeed bf16 holds the parameters in bf16 (buffers stay fp32) and does not autocast."""
    dtype = getattr(torch, cfg.model.dtype)
    if not cfg.train.get("bf16"):
        return Precision(dtype, dtype, autocast=False)
    strategy = cfg.get("strategy")
    if strategy is not None and strategy.get("fsdp"):
        return Precision(dtype, torch.bfloat16, autocast=True)
    if strategy is not None and strategy.get("deepspeed"):
        return Precision(dtype, torch.bfloat16, autocast=False)
    return Precision(dtype, dtype, autocast=True)


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` with its floating parameters in `dtype` and its buffers as they were (rotary `inv_freq` stays
    fp32, as under FSDP2's policy and DeepSpeed's cast): `Module.to(dtype)` would cast the buffers too."""
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return model


def scoring_precision(cfg: DictConfig, device: torch.device) -> tuple[Precision, contextlib.AbstractContextManager]:
    """(precision, context) of the scoring passes: the training strategy's own arithmetic
    (`training_precision`), so that the reference and the policy at step 0 agree (m_theta starts at 0)."""
    precision = training_precision(cfg)
    if precision.autocast:
        return precision, torch.autocast(device.type, dtype=torch.bfloat16)
    return precision, contextlib.nullcontext()


def _readable_scores(cache_dir: Path, key: str) -> Scores | None:
    """This rank's own read of the cache entry; None where it is absent or cannot be read here (a stale NFS
    handle, a torn copy): the ranks then compute it together instead of one entering the collectives alone."""
    try:
        return load_scores(cache_dir, key)
    except Exception as exc:  # any failed read: the entry is recomputed, never trusted
        log.warning("cannot read the cached scores %s on this rank (%s): computing them", key, exc)
        return None


def _cached_or_sharded(cache_dir: Path, key: str, compute) -> tuple[Scores, bool]:
    """`cached_scores`, with several processes: every rank reads the key and they agree (all or none use the cache)
    before any collective; if one rank lacks it, every rank joins the sharded computation, rank 0 writes it."""
    if not dist_ready():
        return cached_scores(cache_dir, key, compute)
    found = _readable_scores(cache_dir, key)
    if all_ranks_agree(found is not None):
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
        train_samples, eval_samples, tokenized, data_fp = tokenized_data(cfg, tokenizer, fingerprint)
    finally:
        trainers_log.removeHandler(collected)
    check_batch_fits(cfg, len(train_samples), f"the {len(train_samples)}")  # data.n_train null: known only now
    fingerprints = input_fingerprints(cfg, tokenizer, fingerprint, data_fp)
    log.info("Data: %d train and %d eval questions (tokenized: %s)", len(train_samples), len(eval_samples),
             "computed" if tokenized else "cached")

    loaded: list[torch.nn.Module] = []
    precision, autocast = scoring_precision(cfg, device)

    def model() -> torch.nn.Module:
        if not loaded:
            loaded.append(load_model(cfg, device=device))
        return loaded[0]

    def scoring_model() -> torch.nn.Module:
        """The model as the strategy's forward sees it; a cast copy where the job keeps the loaded one."""
        if precision.param_dtype == precision.model_dtype:
            return model()
        if len(loaded) < 2:
            loaded.append(cast_parameters(copy.deepcopy(model()) if keep_model else model(), precision.param_dtype))
        return loaded[1]

    def scores(kind: str, samples: list[Sample]) -> tuple[Scores, bool]:
        key = scores_key(kind, fingerprint, precision.key, cfg.model.attn_implementation, samples)

        def compute() -> Scores:
            with autocast:
                return score_sharded(scoring_model(), samples, letters, pad_id, cfg.train.eval_batch_size,
                                     progress=kind)

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
        fingerprints=fingerprints,
        subject_info=None if subject_info is None else
        {s: subject_info.get(s, {"name": s, "category": ""}) for s in sorted({x.subject for x in eval_samples})},
        data_warnings=list(dict.fromkeys(collected.lines)),
    )
