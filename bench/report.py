"""The printed table of `make bench`: one line per (row, model size), value against goal."""

from __future__ import annotations

from typing import Any

from bench.peer import first_loss_text

GPU_NOTE = "not measured yet (no GPU machine in the session that produced these numbers)"

_SHORT = {
    1: "minor_sft (cached ref) / sft, step time",
    2: "minor_sft (live ref fwd) / sft, step time",
    3: "LossTrainer step / bare PyTorch loop",
    4: "eval q/s: 1 pass per question / per option",
    5: "grid: tokenisations, reference passes",
    6: "train step time, answer-only / full logits",
    7: "train step peak RSS, answer-only / full logits",
    8: "eval batch time, answer-only / full logits",
    9: "eval batch peak RSS, answer-only / full logits",
    10: "sft step, LossTrainer / TRL SFTTrainer nll",
    11: "sft step, LossTrainer / TRL nll (Qwen2 vocab)",
    12: "minor_sft step (cached ref) / TRL nll",
    13: "dft step, LossTrainer / TRL SFTTrainer dft",
    14: "sft step peak memory, LossTrainer / TRL nll",
}
_FIRST_LOSS = {10: ("ours_sft", "trl_nll"), 11: ("ours_sft", "trl_nll"), 12: ("ours_sft", "trl_nll"),
               13: ("ours_dft", "trl_dft"), 14: ("ours_sft", "trl_nll")}


def _ok(value: float, goal: str | None) -> str:
    if goal is None:
        return ""
    op, bound = goal.split()
    met = value <= float(bound) if op == "<=" else value >= float(bound)
    return "yes" if met else "NO"


def _ratio_line(row: dict, size: str, r: dict[str, Any]) -> list[str]:
    note = f"[{r['min']:.2f}-{r['max']:.2f}] fastest {r['fastest_step_ratio']:.2f}"
    if row["row"] in (7, 9):
        note = f"[{r['min']:.2f}-{r['max']:.2f}] per-process peak resident memory"
    if row["row"] in _FIRST_LOSS:
        if row["row"] == 14:
            mb = r["peak_memory_mb"]
            note = f"[{r['min']:.2f}-{r['max']:.2f}] peak {mb['ours_sft']:.0f} vs {mb['trl_nll']:.0f} MB"
        note += "; " + first_loss_text(r["first_loss"], _FIRST_LOSS[row["row"]])
    if row["row"] == 4:
        lm = r["lm_eval"]
        lm_note = f"lm-eval {lm['agree']}/{lm['n_questions']}" if lm["checked"] else "lm-eval not installed"
        same = "=" if r["accuracy_ours"] == r["accuracy_naive"] else "!="
        note += (f" {r['ours_questions_per_s']:.0f} vs {r['naive_questions_per_s']:.0f} q/s;"
                 f" with m_theta {r['with_m_theta_ratio']:.2f};"
                 f" acc {r['accuracy_ours']:.3f}{same}{r['accuracy_naive']:.3f};"
                 f" agree {r['agree']}/{r['n_questions']}; {lm_note}")
    return [str(row["row"]), _SHORT[row["row"]], size, f"{r['ratio']:.3f}", row["goal"] or "-",
            _ok(r["ratio"], row["goal"]), note]


def _grid_line(row: dict, g: dict[str, Any]) -> list[str]:
    met = g["tokenisations"] == 1 and g["reference_passes"] == 1
    note = (f"{g['n_jobs']} jobs; base-eval passes {g['base_eval_passes']}; "
            f"encode_items calls {g['encode_items_calls']}")
    return ["5", _SHORT[5], f"{g['n_jobs']} jobs", f"{g['tokenisations']}, {g['reference_passes']}", "1, 1",
            "yes" if met else "NO", note]


def format_table(results: dict[str, Any]) -> str:
    """Aligned text table plus the machine line; GPU numbers are reported as not measured."""
    lines = [["row", "measure", "model", "value", "goal", "met", "[per-rep range] ratio of fastest steps; details"]]
    for row in results["rows"]:
        if row["row"] == 5:
            if "grid" in row["results"]:
                lines.append(_grid_line(row, row["results"]["grid"]))
            continue
        for size, r in row["results"].items():
            lines.append(_ratio_line(row, size, r))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1] for line in lines]
    m = results["machine"]
    models = ", ".join(f"{k} {v['params'] / 1e6:.2f}M params" for k, v in results["models"].items())
    text.append("")
    text.append(f"{results['date']}  {m['device'].upper()}, {m['cores']} cores, torch threads {m['torch_threads']}, "
                f"{m['cpu']}; load avg {m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f}")
    text.append(f"models: {models}" + ("  (SMOKE RUN: harness check, not a measurement)" if results["smoke"] else ""))
    text.append(f"GPU: {results['gpu']}")
    return "\n".join(text)
