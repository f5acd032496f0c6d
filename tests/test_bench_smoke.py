"""The benchmark harness runs end to end (two steps, one repetition) and writes every row.

No timing is asserted: a smoke run on a shared machine measures nothing. What is asserted is the
contract of bench/results.json and the correctness checks the bench makes in the same run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.run import main
from trainers.world.build import EmbeddedWorld

# the whole bench, two steps per row; in one pytest-xdist worker, so its module fixture runs once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_smoke")]


@pytest.fixture(scope="module")
def smoke_results(tiny_world: EmbeddedWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    results = main(["--smoke", "--world-root", str(tiny_world.root), "--out", str(out), "--threads", "1"])
    return results, out


def test_writes_every_row(smoke_results: tuple[dict, Path]) -> None:
    results, out = smoke_results
    assert json.loads(out.read_text()) == json.loads(json.dumps(results, default=str))
    assert [row["row"] for row in results["rows"]] == list(range(1, 15))
    assert set(results["models"]) == {"tiny", "medium"}
    for row in results["rows"][:4]:
        assert set(row["results"]) == {"tiny", "medium"}
        for r in row["results"].values():
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    assert results["machine"]["torch_threads"] == 1


def test_evaluator_agrees_with_per_option_scoring(smoke_results: tuple[dict, Path]) -> None:
    for r in smoke_results[0]["rows"][3]["results"].values():
        assert r["predictions_agree"] and r["agree"] == r["n_questions"]
        assert r["accuracy_ours"] == r["accuracy_naive"]


def test_evaluator_agrees_with_lm_eval_harness(smoke_results: tuple[dict, Path]) -> None:
    import lm_eval  # noqa: F401  (a dev dependency: `make test` installs it, so its absence fails)
    for r in smoke_results[0]["rows"][3]["results"].values():
        check = r["lm_eval"]
        assert check["checked"] and check["predictions_agree"]
        assert check["max_abs_loglik_diff_vs_naive"] < 1e-4


def test_grid_counts_shared_passes(smoke_results: tuple[dict, Path]) -> None:
    grid = smoke_results[0]["rows"][4]["results"]["grid"]
    assert grid["n_jobs"] == 6 and all(job["status"] == "ok" for job in grid["jobs"])
    assert grid["reference_passes"] == grid["reference_scoring_calls"] == 1
    assert grid["tokenisations"] == 1 and grid["encode_items_calls"] == 2


def test_answer_only_and_full_logits_compute_the_same_loss_log_probs_and_letters(smoke_results) -> None:
    """Rows 6-9 time two ways of computing the same numbers: from the same weights and batch, the training
    step's loss and the evaluation batch's answer log-probs agree to float noise and every letter is the same."""
    vocab = smoke_results[0]["vocab"]
    assert not vocab["separate_processes"]  # the smoke run measures in-process: its memory ratio means nothing
    train, evaluation = vocab["train"]["agreement"], vocab["eval"]["agreement"]
    assert math.isfinite(train["loss_full"]) and train["loss_full"] > 0
    assert train["loss_max_abs_diff"] <= 1e-5 * train["loss_full"]
    assert len(evaluation["logps_full"]) == vocab["shape"]["batch_size"]
    assert evaluation["logps_max_abs_diff"] <= 1e-4 and evaluation["preds_agree"]
    for phase in ("train", "eval"):
        steps = vocab[phase]["median_step_s"]
        assert steps["full"] > 0 and steps["lean"] > 0


def test_trl_and_our_trainer_log_the_losses_their_formulas_give_on_the_first_step(smoke_results) -> None:
    """Rows 10-14 compare equal work: on every model both trainers start from the same weights and batch, and
    each logs the loss its own normalisation gives (ours per answer, TRL's per token) to float noise."""
    peer = smoke_results[0]["peer"]
    measured = {**peer["sizes"], "vocab": peer["vocab"]}
    assert set(measured) == {"tiny", "medium", "vocab"}
    for name, run in measured.items():
        assert set(run["first_loss"]) == {"ours_sft", "trl_nll", "ours_dft", "trl_dft"}, name
        for variant, f in run["first_loss"].items():
            assert f["max_abs_diff"] <= 1e-5 * max(1.0, abs(f["expected"])), (name, variant, f)
        assert all(r["ratio"] > 0 for r in run["ratios"].values())
    # every answer of the vocabulary rows has the same length: the two normalisations coincide there
    vocab = peer["vocab"]["first_loss"]
    assert vocab["ours_sft"]["expected"] == pytest.approx(vocab["trl_nll"]["expected"], rel=1e-6)
    # the embedded world's answers differ in length: there they do not, and the bench says which is which
    tiny = peer["sizes"]["tiny"]["first_loss"]
    assert tiny["ours_sft"]["expected"] != pytest.approx(tiny["trl_nll"]["expected"], rel=1e-3)
