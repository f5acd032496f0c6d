"""The project's mutation run: one-line bugs of the kind a real change makes, planted one at a time in a copy of
the checkout, each against the tests that should catch it. A mutation the tests miss "survived": a place where
the suite would let that bug land. `make mutate` runs the list; quote its kill rate when closing an issue that
touches losses, checkpoints, job deaths, early stop, pruning, pooling, the peak rule or the plan.

    .venv/bin/python tests/mutate.py                 # every mutation
    .venv/bin/python tests/mutate.py --only peak     # the mutations whose name contains "peak"
    .venv/bin/python tests/mutate.py --list

The copy is made under a temporary directory (the checkout is never edited, so an interrupted run leaves nothing
behind); ../shared is linked beside it so the data-backed tests run as they do in the checkout. A mutation whose
line is no longer in its file is reported as stale and fails the run: the list must follow the code.

Left out on purpose: mutations that change no behaviour (equivalent mutants), e.g. dropping early stopping's
"the best's upper neighbour is never stopped" check, which the lower-neighbour rule already implies (the best lr is
never clearly worse than itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    before: str  # exact text, found exactly once in the file
    after: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


MUTATIONS: tuple[Mutation, ...] = (
    # losses
    Mutation("dft weights lose their stop-gradient", "trainers/model/losses.py",
             "weights = tokens.policy.detach().exp()", "weights = tokens.policy.exp()", ("tests/test_losses.py",)),
    Mutation("every method file's method takes β", "trainers/runtime/methods.py",
             'takes_beta=conf.get("beta") is not None', "takes_beta=True",
             ("tests/test_adding_a_method.py", "-k", "not sweep_and_the_report")),
    Mutation("a method's spec counted in the config hash", "trainers/runtime/run_dir.py",
             'resolved.get("method", {}).pop("spec", None)', "pass",
             ("tests/test_adding_a_method.py", "-k", "not sweep_and_the_report")),
    Mutation("minor_sft coefficient without its 2", "trainers/model/losses.py",
             "return -(2.0 / (beta * n_tokens)) * F.logsigmoid(", "return -(1.0 / (beta * n_tokens)) * F.logsigmoid(",
             ("tests/test_losses.py",)),
    Mutation("dpo_sft without beta inside the sigmoid", "trainers/model/losses.py",
             "return -F.logsigmoid(beta * (policy_logps - ref_logps))",
             "return -F.logsigmoid(policy_logps - ref_logps)", ("tests/test_losses.py",)),
    Mutation("kl_sft penalty without its -1 (k3 becomes exp(d) - d)", "trainers/model/losses.py",
             "k3 = torch.expm1(delta) - delta", "k3 = torch.exp(delta) - delta", ("tests/test_losses.py",)),
    # the run-directory contract
    Mutation("a diverged point is final: a rerun skips it", "trainers/runtime/run_dir.py",
             "return self is RunStatus.OK or self.ended_early",
             "return self in (RunStatus.OK, RunStatus.DIVERGED) or self.ended_early",
             ("tests/test_run_dir_contract.py",
              "tests/test_stop_request.py::test_a_stopped_or_pruned_point_is_final_for_a_rerun_unless_asked")),
    Mutation("a diverged run does not score", "trainers/runtime/run_dir.py",
             "return self in (RunStatus.OK, RunStatus.DIVERGED)", "return self is RunStatus.OK",
             ("tests/test_run_dir_contract.py", "tests/test_analysis_tables.py")),
    # checkpoints
    Mutation("torn checkpoints kept", "trainers/job/checkpoints.py",
             "        else:\n            shutil.rmtree(path)", "        else:\n            pass",
             ("tests/test_checkpoint_files.py",)),
    Mutation("a checkpoint is complete when trainer_state.json exists", "trainers/job/checkpoints.py",
             "json.loads((checkpoint / TRAINER_STATE_NAME).read_text())", "(checkpoint / TRAINER_STATE_NAME).stat()",
             ("tests/test_checkpoint_files.py",)),
    Mutation("checkpoints ordered as text", "trainers/job/checkpoints.py",
             "found = sorted((int(m.group(1)), p)", "found = sorted((m.group(1), p)",
             ("tests/test_checkpoint_files.py",)),
    # early stop
    Mutation("early stop: lower neighbour condemned when any beta is worse", "sweep/early_stop.py",
             "lower_worse = lower in means and all(", "lower_worse = lower in means and any(",
             ("tests/test_early_stop.py", "-m", "not slow")),
    Mutation("early stop: seed mean counts one seed's questions", "sweep/early_stop.py",
             "sum(e.n for e in evals))", "evals[0].n)", ("tests/test_early_stop.py", "-m", "not slow")),
    Mutation("early stop never switched on inside the grid sweeper", "sweep/grid_sweeper.py",
             "self.early_stop = early_stop_spec(", "self.early_stop = None and early_stop_spec(",
             ("tests/test_early_stop.py::test_the_sweeper_stops_the_point_past_the_threshold_and_runs_every_other_to_its_end",)),
    # pruning
    Mutation("pruner never consulted: every reported trial pruned", "sweep/pruning.py",
             "and self._still_training(run_dir, new) and trial.should_prune():",
             "and self._still_training(run_dir, new):", ("tests/test_pruning_monitor.py",)),
    Mutation("pruner consulted after the last look too", "sweep/pruning.py",
             "        self.poll(decide=False)", "        self.poll(decide=True)", ("tests/test_pruning_monitor.py",)),
    # the report's estimates
    Mutation("bootstrap keeps the observed best beta instead of redoing the choice", "analysis/estimate.py",
             'resampled.append(select_b[cand["pid"].to_numpy()].max(axis=0))',
             'resampled.append(select_b[int(best["pid"])])', ("tests/test_bootstrap_beta_choice.py",)),
    # pooling across settings
    Mutation("random effects pooled with fixed-effect weights", "analysis/stats.py",
             "w_re = 1 / (v + tau2)", "w_re = 1 / v",
             ("tests/test_analysis_stats.py", "tests/test_analysis_across.py")),
    Mutation("DerSimonian-Laird c in the textbook form that cancels", "analysis/stats.py",
             "c = _dl_c(w)", "c = float(np.sum(w) - np.sum(w ** 2) / np.sum(w))",
             ("tests/test_analysis_stats.py", "tests/test_analysis_across.py")),
    Mutation("across settings: holds although a setting contradicts", "analysis/across.py",
             "    if positive and not contra:", "    if positive:", ("tests/test_analysis_across.py",)),
    Mutation("across settings: the prior on tau dropped", "analysis/stats.py",
             " * np.exp(-0.5 * (tau / tau_scale) ** 2) * step", " * step", ("tests/test_analysis_across.py",)),
    # the resource plan
    Mutation("plan: DDP's gradient buckets not counted", "trainers/job/plan.py",
             '    if s.name == "ddp":\n        extra += grads', '    if s.name == "ddp":\n        extra += 0.0',
             ("tests/test_plan.py",)),
    Mutation("plan: CPU host memory counts one process", "trainers/job/plan.py",
             "return n * (RUNTIME_GB * GB + memory.total(checkpointing))",
             "return RUNTIME_GB * GB + memory.total(checkpointing)", ("tests/test_plan.py",)),
    Mutation("plan: disk at peak forgets the ended jobs' kept checkpoints", "sweep/planning.py",
             "disk = (at_once * running + (n - at_once) * kept) * biggest", "disk = at_once * running * biggest",
             ("tests/test_plan.py",)),
    Mutation("plan: FSDP's accumulation buffer not counted", "trainers/job/plan.py",
             "            extra += shape.trainable * (2 if mixed else weight_bytes)", "            extra += 0.0",
             ("tests/test_plan.py",)),
    # input checks
    Mutation("ceval's answerless test split accepted", "trainers/job/validate.py",
             "if data.get(field) is not None and data[field] in withheld:", "if False:",
             ("tests/test_ceval_exam.py", "-k", "refused_in_one_line")),
    # peak rule
    Mutation("peak rule: ties go to the last candidate (higher lr or beta)", "trainers/data/selection.py",
             "lr = lrs[best_of([chosen[x][1] for x in lrs])[0]]", "lr = lrs[best_of([chosen[x][1] for x in lrs])[-1]]",
             ("tests/test_peak_rule.py", "tests/test_selection.py")),
    Mutation("peak rule: a diverged run scores as missing, not as the base model", "trainers/data/selection.py",
             'return result.get("base_accuracy")', "return None",
             ("tests/test_peak_rule.py", "tests/test_selection.py")),
)


def _copy_checkout(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files of the checkout, copied to dest/repo, with .venv and
    ../shared linked (the tests find the shared data at REPO_ROOT.parent / 'shared')."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    repo = dest / "repo"
    for name in filter(None, files):
        src = REPO_ROOT / name
        if src.is_file() and not src.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    shared = REPO_ROOT.parent / "shared"
    if shared.is_dir():
        (dest / "shared").symlink_to(shared)
    return repo


def _run_tests(repo: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1",
           "SFTSWEEP_TESTS_NO_LEFTOVER_CHECK": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", *tests]
    try:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    tail = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode, tail[-1] if tail else ""


def run(mutations: tuple[Mutation, ...], timeout: float) -> dict:
    """Plant each mutation in a fresh copy's file, run its tests, restore; the outcomes and the kill rate."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="sftsweep-mutate-") as tmp:
        repo = _copy_checkout(Path(tmp))
        for tests in sorted({m.tests for m in mutations}):
            code, last = _run_tests(repo, tests, timeout)
            if code != 0:
                raise SystemExit(f"error: the unmutated code fails {' '.join(tests)} ({last}): fix that first")
        for i, m in enumerate(mutations, 1):
            path = repo / m.path
            original = path.read_text()
            found = original.count(m.before)
            started = time.monotonic()
            if found != 1:
                outcome, last = "stale", f"its line occurs {found} times in {m.path}"
            else:
                path.write_text(original.replace(m.before, m.after))
                try:
                    code, last = _run_tests(repo, m.tests, timeout)
                finally:
                    path.write_text(original)
                outcome = {0: "survived", 1: "killed"}.get(code, "error")
            seconds = time.monotonic() - started
            rows.append({"name": m.name, "path": m.path, "outcome": outcome, "tests": list(m.tests),
                         "detail": last, "seconds": round(seconds, 1)})
            print(f"[mutate] {i}/{len(mutations)} {outcome:8s} {m.name} ({m.path}; {seconds:.0f} s): {last}",
                  flush=True)
    killed = sum(r["outcome"] == "killed" for r in rows)
    return {"killed": killed, "total": len(rows), "kill_rate": killed / len(rows) if rows else None, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one mutation's tests")
    parser.add_argument("--json", type=Path, help="also write the outcomes to this file")
    args = parser.parse_args(argv)
    chosen = tuple(m for m in MUTATIONS if not args.only or args.only in m.name)
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name}  ({m.path}; {' '.join(m.tests)})")
        return 0 if args.list else 2
    summary = run(chosen, args.timeout)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"[mutate] killed {summary['killed']} of {summary['total']} ({summary['kill_rate']:.0%}); survived: "
          + (", ".join(r["name"] for r in summary["rows"] if r["outcome"] == "survived") or "none"))
    bad = [r["name"] for r in summary["rows"] if r["outcome"] in ("stale", "error")]
    if bad:
        print(f"[mutate] stale or broken mutations (fix the list): {', '.join(bad)}")
    return 1 if bad or summary["killed"] < summary["total"] else 0


if __name__ == "__main__":
    sys.exit(main())
