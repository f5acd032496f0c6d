"""One grid point on two real processes (torch's elastic launcher, gloo on this CPU) against one process.

Each test starts real workers through `trainers.job.agent.launch` (the agent the Hydra job runs),
on the tiny world of conftest.py, for a few steps.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import kill_after_first_checkpoint, tiny_job
from trainers.job.agent import launch
from trainers.job.config import save_job_config
from trainers.job.prepare import Prepared, prepare
from trainers.model.reference import cached_scores
from trainers.model.scoring import Scores, score_samples
from trainers.recipe import run_job
from trainers.runtime.run_dir import read_jsonl

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
FAULT_WORKER = (str(REPO_ROOT / "tests" / "fault_worker.py"),)
# 8 questions per step: 1 process × 2 micro-batches of 4, or 2 processes × 1 micro-batch of 4
BATCH = ("train.global_batch_size=8", "train.per_device_batch_size=4", "train.eval_batch_size=8")
TWO = ("strategy=ddp", "strategy.nproc_per_node=2")


@pytest.fixture(autouse=True)
def _cpu_launch_env(monkeypatch):
    """What launch() and torchrun set in the agent's environment, undone after each test."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _rows(run_dir: Path, name: str) -> list[dict]:
    return read_jsonl(Path(run_dir) / name)


def test_two_processes_match_one_process_with_accumulation(job_cfg, monkeypatch):
    common = ("method=minor_sft", "method.beta=0.1", "train.lr=3e-3", "train.max_steps=4", "train.logging_steps=1",
              "train.eval_steps=2", *BATCH)
    one = run_job(job_cfg(*common, run="one"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg_two = job_cfg(*common, *TWO, "logger=wandb", run="two")
    two = launch(cfg_two)

    assert (one["status"], two["status"]) == ("ok", "ok")
    assert (one["world_size"], one["grad_accumulation"]) == (1, 2)
    assert (two["world_size"], two["grad_accumulation"], two["strategy"]) == (2, 1, "ddp")
    assert one["effective_batch"] == two["effective_batch"] == 8
    assert two["train_tokens"] == one["train_tokens"] and two["steps"] == one["steps"] == 4
    dir_one, dir_two = job_cfg(*common, run="one").run_dir, cfg_two.run_dir
    m1, m2 = _rows(dir_one, "metrics.jsonl"), _rows(dir_two, "metrics.jsonl")
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2, 3, 4]
    diffs = {k: max(abs(a[k] - b[k]) for a, b in zip(m1, m2, strict=True)) for k in ("loss", "grad_norm", "m_theta")}
    print(f"largest |1 process - 2 processes| per quantity: {diffs}")
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    assert m1[-1]["loss"] != m1[0]["loss"]  # the model did train

    e1, e2 = _rows(dir_one, "eval.jsonl"), _rows(dir_two, "eval.jsonl")
    assert [e["step"] for e in e2] == [0, 2, 4]  # one step-0 row: rank 0 alone writes
    assert [e["accuracy"] for e in e1] == [e["accuracy"] for e in e2]
    assert two["accuracy"] == one["accuracy"] and two["select_accuracy"] == one["select_accuracy"]
    p1 = _rows(dir_one, "predictions.jsonl")
    assert p1 == _rows(dir_two, "predictions.jsonl") and len(p1) == two["eval_n"]
    assert len(list(Path(dir_two).glob("wandb/offline-run-*"))) == 1  # one W&B run, not one per rank


def _launch_with_fault(cfg, fault: str, timeout: float = 300) -> tuple[int, float]:
    """The agent in its own process group with a fault injected; (exit code, seconds). A hang fails the test:
    the whole group (agent and workers) is killed at `timeout`."""
    path = save_job_config(cfg)
    code = ("import sys\nfrom trainers.job.agent import launch\nfrom trainers.job.config import load_job_config\n"
            f"try:\n    launch(load_job_config({str(path)!r}), worker={FAULT_WORKER!r})\n"
            "except RuntimeError as exc:\n    print(exc)\n    sys.exit(1)\n")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "SFTSWEEP_FAULT": fault})
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"fault {fault}: the job hung for {timeout} s")
    return proc.returncode, time.monotonic() - started


def test_nan_on_one_rank_ends_every_rank_as_diverged(job_cfg):
    cfg = job_cfg("method=sft", "train.max_steps=6", *BATCH, *TWO)
    code, seconds = _launch_with_fault(cfg, "nan:1")
    result = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert code == 0 and result["status"] == "diverged" and "non-finite loss at step 1" in result["error"]
    assert result["steps"] < 6 and result["world_size"] == 2
    print(f"NaN on rank 1: both ranks ended, job diverged, in {seconds:.1f} s (agent start to exit)")


def test_exception_on_one_rank_ends_the_job_as_failed(job_cfg):
    cfg = job_cfg("method=sft", *BATCH, *TWO)
    code, seconds = _launch_with_fault(cfg, "raise:1")
    assert code == 1
    print(f"exception on rank 1: job failed in {seconds:.1f} s (agent start to exit)")
    saved = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == "rank 1: RuntimeError: injected failure on rank 1", saved


def test_two_processes_killed_after_a_checkpoint_resume_from_it_never_from_a_torn_one(job_cfg, caplog):
    """SIGKILL to the agent's and every worker's process group once checkpoint-2 is complete, a torn
    checkpoint-4 (half the weights, no trainer_state.json) left behind, rerun on two processes."""
    overrides = ("method=minor_sft", "train.save_steps=2", "train.save_total_limit=2",
                 "train.keep_checkpoints=true", *BATCH, *TWO)
    cfg = job_cfg(*overrides)
    run_dir, checkpoints = Path(cfg.run_dir), Path(cfg.run_dir) / "checkpoints"
    code = (f"from trainers.job.agent import launch\nfrom trainers.job.config import load_job_config\n"
            f"launch(load_job_config({str(save_job_config(cfg))!r}))")
    assert kill_after_first_checkpoint(code, checkpoints) == ["checkpoint-2"]
    assert not (run_dir / "result.json").exists()
    assert [m["step"] for m in _rows(run_dir, "metrics.jsonl")] == [1, 2]
    torn = checkpoints / "checkpoint-4"
    torn.mkdir()
    weights = (checkpoints / "checkpoint-2" / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    resumed = launch(job_cfg(*overrides))
    assert (resumed["status"], resumed["resumed_from_step"], resumed["steps"]) == ("ok", 2, 6)
    assert resumed["world_size"] == 2
    # 6 steps x 8 questions: one pass over the 48 train questions, nothing lost, nothing counted twice
    train_samples = prepare(cfg, reference=False).train_samples
    assert resumed["train_tokens"] == sum(len(s.input_ids) for s in train_samples)
    assert [m["step"] for m in _rows(run_dir, "metrics.jsonl")] == [1, 2, 4, 6]
    assert [e["step"] for e in _rows(run_dir, "eval.jsonl")] == [0, 3, 6]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert json.loads((torn / "trainer_state.json").read_text())["global_step"] == 4  # saved anew, whole

    # the same point on one process: checkpoints of 2 ranks are another layout, never resumed
    with caplog.at_level(logging.WARNING, logger="trainers.job.checkpoints"):
        alone = run_job(job_cfg(*overrides[:-2]))
    assert (alone["status"], alone["resumed_from_step"], alone["steps"], alone["world_size"]) == ("ok", None, 6, 1)
    assert ("were written by strategy=ddp on 2 process(es), this job runs strategy=single on 1 process(es); "
            "starting afresh") in caplog.text


def _cli(tiny_world, tmp_path, *overrides: str, patch: str = "") -> subprocess.CompletedProcess:
    args = ["method=sft", "logger=none", "model.embedded=false", f"paths.embedded_dir={tiny_world.root}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'out'}", "train.max_steps=2",
            "train.num_threads=1", *overrides]
    code = f"{patch}\nimport sys\nsys.argv = ['trainers.train', *{args!r}]\nfrom trainers.train import main\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_one_process_seeing_several_gpus_is_refused(tiny_world, tmp_path):
    # simulated: this machine has no GPU, so it is given a driver's device node and torch is told it sees two
    (tmp_path / "nvidiactl").touch()
    out = _cli(tiny_world, tmp_path, patch=(
        "import torch\ntorch.cuda.device_count = lambda: 2\nimport trainers.runtime.process as process\n"
        f"process.GPU_DRIVER_NODES = ({str(tmp_path / 'nvidiactl')!r},)"))
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 GPUs are visible to one process" in lines[0]
    assert "strategy=ddp strategy.nproc_per_node=2" in lines[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("metrics.jsonl"))


def test_batch_not_divisible_by_processes_is_refused(tiny_world, tmp_path):
    out = _cli(tiny_world, tmp_path, "strategy=ddp", "strategy.nproc_per_node=3", "train.global_batch_size=8",
               "train.per_device_batch_size=4")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.global_batch_size=8 is not a multiple" in lines[0], lines
    assert "4 × 3 = 12" in lines[0]
    assert not list((tmp_path / "out").rglob("metrics.jsonl"))


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def two_rank_probes(tiny_world, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Prepared]:
    """tests/two_rank_probes.py on 2 ranks, once for the tests below: (its torchrun, its output directory, the
    prepared job whose first 31 evaluation samples it scores). The cache entry it looks up is written first:
    stale scores (7.0), which rank 0 reads and rank 1 cannot."""
    root = tmp_path_factory.mktemp("two-rank-probes")
    prepared = prepare(tiny_job(tiny_world, root), reference=False)
    samples = prepared.eval_samples[:31]
    stale = Scores(logps=torch.full((3,), 7.0), preds=torch.zeros(3, dtype=torch.long),
                   token_logps=torch.full((3,), 7.0))
    cached_scores(root / "scores", "reference-test", lambda: stale)
    spec = {"model_dir": str(tiny_world.model_dir), "cache_dir": str(root / "scores"), "cache_key": "reference-test",
            "samples": [[s.id, s.subject, s.input_ids, s.prompt_len, s.gold] for s in samples],
            "letters": prepared.letter_ids, "pad": prepared.pad_id, "batch_size": 5}
    (root / "spec.json").write_text(json.dumps(spec))
    out = _torchrun(str(REPO_ROOT / "tests" / "two_rank_probes.py"), str(root / "spec.json"), str(root))
    return out, root, prepared


# the tests below read one torchrun: pytest-xdist (--dist loadgroup) gives them to one worker, which runs it once
SHARES_PROBES = pytest.mark.xdist_group("two_rank_probes")


def _probe(two_rank_probes, name: str) -> dict:
    out, root, _ = two_rank_probes
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((root / f"{name}.json").read_text())


@SHARES_PROBES
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_sharded_scoring_equals_one_process(two_rank_probes, mode):
    """Evaluation and the reference pass split over 2 ranks, on a model FSDP2 shards (every rank must join
    every forward: 31 samples in batches of 5 give shards of 16 and 15, padded to equal batch counts)."""
    got = _probe(two_rank_probes, f"score_{mode}")
    prepared = two_rank_probes[2]
    samples = prepared.eval_samples[:31]
    expected = score_samples(prepared.model, samples, prepared.letter_ids, prepared.pad_id, 5)
    assert got["preds"] == expected.preds.tolist()
    assert len(got["logps"]) == 31 and len(got["token_logps"]) == sum(s.n_tokens for s in samples)
    torch.testing.assert_close(torch.tensor(got["logps"]), expected.logps, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(got["token_logps"]), expected.token_logps, rtol=0, atol=1e-5)


@SHARES_PROBES
def test_fsdp_rank_1_loads_on_meta_and_receives_rank_0s_weights(two_rank_probes):
    """Only rank 0 reads the checkpoint (issue 20: 8 full copies per node); rank 1 starts on the meta device
    and, once accelerate's FSDP2 preparation has broadcast rank 0's weights, holds exactly the checkpoint."""
    assert _probe(two_rank_probes, "fsdp_load") == {"loaded_on": ["meta"], "worst": 0.0, "sharded": True}


@SHARES_PROBES
def test_every_rank_agrees_on_the_reference_cache_before_a_collective(two_rank_probes):
    """A cache entry rank 0 reads but rank 1 cannot: both compute it together (rank 1 alone in the scoring
    collectives would hang the job), and both get the same scores."""
    ranks = [_probe(two_rank_probes, f"cache_agree_rank{r}") for r in (0, 1)]
    assert ranks == [{"computed": True, "logps": [3.0, 3.0, 3.0]}] * 2  # 1 + 2, all-reduced over both ranks


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_zero3"])
def test_process_group_waits_train_ddp_timeout(job_cfg, tmp_path, strategy):
    """The group the worker creates before TrainingArguments exist times out after `train.ddp_timeout`, and
    the arguments say the same (issue 20: the group kept torch's default and the key was ignored)."""
    if strategy == "deepspeed_zero3":
        import deepspeed  # noqa: F401  (a dev dependency: `make test` installs it, so its absence fails)
    model = Path(job_cfg().model.path)
    out = _torchrun(str(REPO_ROOT / "tests" / "pg_timeout_worker.py"), str(tmp_path), f"strategy={strategy}",
                    "strategy.nproc_per_node=2", f"model.path={model}", "model.embedded=false", "logger=none",
                    "train.ddp_timeout=37")
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"world_size": 2, "group_timeout_s": 37.0, "args_ddp_timeout": 37}] * 2


def test_prepare_job_on_two_processes_fills_the_cache_like_one(job_cfg, tmp_path):
    """The sweep's prepare job (prepare_only) on 2 ranks: base scores and reference pass sharded, one cache
    entry each, equal to what one process computes."""
    two = job_cfg("prepare_only=true", *TWO, run="prep", cache=tmp_path / "cache2")
    assert launch(two) == {}
    one = prepare(job_cfg(cache=tmp_path / "cache1"), reference=True)
    assert one.reference_pass == "computed"
    for kind in ("base_eval", "reference"):
        (a,), (b,) = [list((tmp_path / c / "scores").glob(f"{kind}-*.safetensors")) for c in ("cache1", "cache2")]
        assert a.name == b.name  # same key
        ta, tb = load_file(str(a)), load_file(str(b))
        assert torch.equal(ta["preds"], tb["preds"])
        torch.testing.assert_close(ta["logps"], tb["logps"], rtol=0, atol=1e-5)
        torch.testing.assert_close(ta["token_logps"], tb["token_logps"], rtol=0, atol=1e-5)


def test_zero3_on_two_processes_killed_and_resumed_matches_one_process(job_cfg):
    """ZeRO-3 on this CPU (DeepSpeed's CPU accelerator over gloo, every rank holding half of each parameter):
    killed after its first ZeRO checkpoint and resumed, the job trains, scores and evaluates (every rank
    joins every forward) to the numbers of one process, and exports the same bf16 model."""
    import deepspeed  # noqa: F401  (a dev dependency: `make test` installs it, so its absence fails)
    common = ("method=minor_sft", "method.beta=0.1", "train.lr=3e-3", "train.max_steps=4", "train.logging_steps=1",
              "train.eval_steps=0", "train.save_model=bf16", *BATCH)
    zero3 = (*common, "strategy=deepspeed_zero3", "strategy.nproc_per_node=2", "train.save_steps=2")
    cfg = job_cfg(*zero3, run="zero3")
    checkpoints = Path(cfg.run_dir) / "checkpoints"
    code = (f"from trainers.job.agent import launch\nfrom trainers.job.config import load_job_config\n"
            f"launch(load_job_config({str(save_job_config(cfg))!r}))")
    assert kill_after_first_checkpoint(code, checkpoints) == ["checkpoint-2"]
    assert list((checkpoints / "checkpoint-2").glob("global_step2/*zero_pp_rank_1*"))  # rank 1's own shard

    two = launch(job_cfg(*zero3, run="zero3"))
    one = run_job(job_cfg(*common, run="one"))
    assert (one["status"], two["status"]) == ("ok", "ok")
    assert (two["world_size"], two["strategy"], two["resumed_from_step"], two["steps"]) == (2, "deepspeed_zero3", 2, 4)
    m1, m2 = _rows(job_cfg(*common, run="one").run_dir, "metrics.jsonl"), _rows(cfg.run_dir, "metrics.jsonl")
    assert [r["step"] for r in m1] == [1, 2, 3, 4] and [r["step"] for r in m2] == [1, 2, 3, 4]
    diffs = {k: max(abs(a[k] - b[k]) for a, b in zip(m1, m2, strict=True)) for k in ("loss", "m_theta")}
    print(f"largest |1 process - ZeRO-3 on 2| per quantity: {diffs}, eval m_theta {one['m_theta']} {two['m_theta']}")
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    assert two["accuracy"] == one["accuracy"] and two["base_accuracy"] == one["base_accuracy"]
    assert two["m_theta"] == pytest.approx(one["m_theta"], abs=1e-5)
    assert _rows(cfg.run_dir, "predictions.jsonl") == _rows(job_cfg(*common, run="one").run_dir, "predictions.jsonl")
    assert not checkpoints.exists()  # an ok end: its checkpoints served resume, nothing else
    # the export gathers every rank's shard: the same bf16 model as one process writes
    exported = [dict(AutoModelForCausalLM.from_pretrained(Path(run) / "model", dtype="auto").named_parameters())
                for run in (cfg.run_dir, job_cfg(*common, run="one").run_dir)]
    assert exported[0].keys() == exported[1].keys()
    for name, weight in exported[0].items():
        assert weight.dtype == torch.bfloat16
        torch.testing.assert_close(weight, exported[1][name])  # bf16's own tolerance: one rounding step
