"""`python -m analysis.report SWEEP_DIR [SWEEP_DIR …] [--out DIR] [--no-wandb]`: the sweep's report.

Several directories (one per data set or world, say) are read as one sweep (analysis.rundirs.load_sweeps):
every claim is judged per setting and across settings (analysis.across), and the report goes to the
directories' common parent unless --out says otherwise.

Writes SWEEP_DIR/report/: a CSV and a Markdown file per table, PNG figures, report.md (all tables) and
report.html (one self-contained page, figures inlined) — plus a Search section when the sweep holds an
Optuna-style search (analysis.search) — then logs a W&B summary run (offline unless
WANDB_MODE says otherwise). Prints where the report is and the learning-rate threshold table. Exits
non-zero with one line when the directory holds no finished run; corrupt files are listed and skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import search as S
from analysis import subjects as SJ
from analysis import tables as T
from analysis.across import ACROSS, across_table
from analysis.claims import CLAIM_COLUMNS, claims_table
from analysis.estimate import MIN_SEEDS, Estimates, estimate
from analysis.planned import read_plan, unfinished
from analysis.plots import Plot, all_plots, search_plots, slug
from analysis.render import html_page, png_img, to_html_table, to_markdown
from analysis.rundirs import Sweep, load_sweeps
from trainers.runtime.disk import no_space, no_space_message
from trainers.runtime.run_dir import DIVERGED, FAILED, LATE_FRACTION, OK, PREDICTIONS, STOP_STATUSES
from trainers.runtime.run_dir import atomic_write_bytes as write_bytes
from trainers.runtime.run_dir import atomic_write_text as write_text


class NoFinishedRuns(Exception):
    """The sweep directory has nothing to report on."""


@dataclass
class Report:
    out_dir: Path
    html: Path
    threshold: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    """One table of the report: its files (`stem`.csv/.md), its heading, its explanation (an EXPLAIN key), and
    the part of the page it goes in. The report's order is the order of `_sections`' list, everywhere."""

    stem: str
    title: str
    frame: pd.DataFrame
    explain: str
    part: str = "tables"  # "tables" (the top), "search", "grids" or "runs"
    only_with_rows: bool = False  # left out of the report when its table is empty


EXPLAIN = {
    "across": "Each claim across settings: each effect (positive: in the claim's direction) pooled over the "
    "settings that measured it by Bayesian random effects (a half-normal prior on the between-setting s.d. τ, "
    "scale 0.04: three settings cannot estimate it), its posterior median, 95% credible interval and "
    "<i>p_positive</i> = P(effect > 0); <i>tau</i> and <i>i2</i> are DerSimonian–Laird's spread (what the "
    "data alone say). <b>holds across settings</b> only when every effect has P(effect > 0) ≥ 0.975 and no "
    "setting's own verdict is \"does not hold\"; <i>disagreeing</i> names the settings where it does not "
    "hold. False \"holds\" ≤ 5% for 3 to 8 settings (docs/report.md). Fewer than three settings: <b>cannot "
    "judge</b>.",
    "claims": "The paper's findings (docs/report.md), one per row and setting, then, with several settings, "
    "one row <i>across settings</i> per claim (the table below has its numbers): <b>holds</b> / <b>does not "
    "hold</b> / <b>undecided</b>, always with the interval, probability or p-value behind the verdict. Accuracies "
    f"are on the report split. One seed decides nothing: a claim whose deciding points have fewer than "
    f"{MIN_SEEDS} scored seeds is undecided whatever its numbers.",
    "threshold": "For each method: at every learning rate the best β on the <b>selection split</b> (mean "
    "over scored seeds); the argmax of that curve is the threshold lr (ties → the lower lr), between the "
    "scored lr just below and just above (<i>bracket</i>). <i>vertex</i> is the maximum of a parabola in "
    "log lr through the peak and its neighbours; its 95% interval and <i>P(argmax)</i> (share of resamples "
    "with the argmax at this lr) come from a hierarchical bootstrap that resamples seeds, then questions, "
    "and redoes the β choice and the argmax in each resample. <i>accuracy</i> and its interval are on the "
    "<b>report split</b>. A peak on an edge of the grid is flagged: the threshold is not bracketed.",
    "threshold_by_setting": "The threshold table's lr per method (rows) and setting (columns): the argmax lr, "
    "its log-quadratic vertex and the vertex's 95% resampled interval; the figure <i>accuracy against learning "
    "rate — settings side by side</i> draws the same.",
    "threshold_comparisons": "P(threshold of A > threshold of B) from the same resamples (vertex redone in "
    "each); P(equal) counts resamples where both land on the same value (the same grid edge, say).",
    "best": "Each method's best configuration (the peak above): chosen on the selection split, scored on "
    "the report split, with the seed-to-seed s.d. and the question standard error apart. mθ is the mean "
    "per-token log-ratio to the base model: final eval mθ and its absolute value (forgetting makes eval mθ "
    f"negative), and train mθ averaged over the last {LATE_FRACTION:.0%} of logged steps.",
    "paired": "Best configurations compared on the same report-split questions. Δ = first − second accuracy; "
    "95% interval and two-sided p from the hierarchical bootstrap (seeds of each configuration resampled, "
    "questions resampled once for both: paired). <i>all settings</i> averages Δ over settings.",
    "divergence": "Seeds that diverged (non-finite loss) per method and lr, over all β. A diverged seed "
    "is a failure at its point and scores the base model's accuracy; a <i>failed</i> run (crash, OOM) is "
    "missing data, counted in neither; nor is a run a sweeper <i>stopped</i> early (<code>n_stopped</code>).",
    "beta": "How much β matters: at each lr, the β chosen on the selection split against the worst β there, "
    "both on the report split, with the hierarchical interval of Δ.",
    "categories": "Each method's best configuration (the peak above, chosen on the selection split) scored on "
    "the <b>report split</b> per subject category (the data set's subject mapping, e.g. C-Eval's STEM, Social "
    "Sciences, Humanities, Other), with question counts and a 95% bootstrap interval (ok seeds, then the "
    "category's questions, resampled). Diverged seeds have no per-question predictions and are left out.",
    "subjects": "The same per exam subject. A subject with few questions says so: its interval is too wide to "
    f"rank it against another (fewer than {SJ.FEW_QUESTIONS} questions).",
    "unfinished": "Points of the planned grid (sweep_summary.json, else sweep_plan.json) without an ok or "
    "diverged run: <i>failed</i> runs are missing data (never a \"degrades\" signal), <i>never finished</i> "
    "ones left nothing or were killed; <i>stopped</i>/<i>pruned</i> ones were ended early by the sweeper "
    "(early stopping, an Optuna pruner) and have no final accuracy.",
    "grid": "Selection-split accuracy, mean over scored seeds (a diverged seed scores the base model). Cells "
    "say how many seeds diverged, failed or were stopped early (not scored: they never reached the full "
    "length); <i>failed (missing)</i> when no seed was scored. The first row "
    "is the base model.",
    "runs": "Every finished run (result.json); select/report accuracy as scored (a diverged run scores the "
    "base model), train mθ over the last quarter of logged steps.",
    "search_best": "Each searched method's best trial (ties → the lower β). A search is found from the run "
    f"directories alone: a method with at least {S.SEARCH_MIN_BETAS} β values that were each run once (a grid "
    "repeats its β "
    "values across learning rates and seeds; a sampler never does). The best of many noisy trials is "
    "optimistic: rerun it with fresh seeds before comparing it with a grid point.",
    "search_trials": "Every run of each search in the order it finished (result.json's finished_at; "
    "<i>(mtime)</i> where the run predates that field). <i>trial</i> counts from 0 in that order "
    "(Optuna's trial number when trials run one at a time); <i>running best</i> is the best accuracy so far.",
}


def _notes(sweep: Sweep, est: Estimates) -> list[str]:
    """Observations a reader needs before trusting the tables."""
    pts = est.points
    notes = list(sweep.notes)  # settings split by their inputs, runs read twice, conflicts (analysis.inputs)
    for setting, info in est.settings.items():
        train_n = sweep.runs.loc[sweep.runs["setting"] == setting, "train_n"].dropna().unique()
        if len(train_n):
            notes.append(f"{setting}: trained on {', '.join(str(int(n)) for n in sorted(train_n))} questions "
                         "(result.json train_n).")
        if info.split_source == PREDICTIONS:
            notes.append(f"{setting}: β and lr chosen on {info.n_select} selection questions, accuracies "
                         f"reported on {info.n_report} other questions (split from predictions.jsonl).")
        else:
            notes.append(f"{setting}: no selection/report split recorded in predictions.jsonl: β and lr are "
                         f"chosen and scored on the same {info.n_questions} questions, so the best configurations' "
                         "accuracies are optimistic (winner's curse).")
        notes.extend(f"{setting}: {n}" for n in info.notes)
        runs = sweep.runs.loc[sweep.runs["setting"] == setting, "run"]
        warned = dict.fromkeys(line for run in runs for line in sweep.data_warnings.get(run, []))
        notes.extend(f"{setting}: data: {line} (result.json data_warnings)" for line in warned)
        worlds = sorted(sweep.runs.loc[sweep.runs["setting"] == setting, "world_sha256"].dropna().unique())
        if worlds:
            notes.append(f"{setting}: embedded world sha256 {', '.join(worlds)} (result.json world_sha256).")
    if len(est.settings) == 1:
        notes.append("One setting: no claim is judged across settings. To judge them, run several worlds "
                     "(make sweep EXPERIMENT=worlds) or read several sweeps: python -m analysis.report DIR1 DIR2 DIR3.")
    notes.append(f"Intervals: hierarchical bootstrap, {est.n_resamples} resamples (seeds, then questions), seeded. "
                 "A diverged seed scores the base model's accuracy; a failed run is missing data.")
    for setting, sp in pts.groupby("setting"):
        d = sp[(sp["method"] == "dpo_sft") & (sp["n_ok"] > 0)].set_index(["lr", "beta"])["accuracy"]
        m = sp[(sp["method"] == "minor_sft") & (sp["n_ok"] > 0)].set_index(["lr", "beta"])["accuracy"]
        shared = d.index.intersection(m.index)
        if len(shared) >= 2 and np.allclose(d.loc[shared], m.loc[shared], rtol=0, atol=1e-12):
            notes.append(
                f"{setting}: MinorSFT and SFT using DPO have identical accuracy at all {len(shared)} shared "
                "(lr, β) points. Expected when every answer has the same number of tokens (e.g. single-token "
                "answers): MinorSFT's loss is then DPO's times the constant 2/(β·m), which Adam cancels. Use "
                "answers of varying length to compare the two losses."
            )
        bases = sweep.runs.loc[sweep.runs["setting"] == setting, "base_accuracy"].dropna().unique()
        if len(bases) > 1:
            notes.append(
                f"{setting}: runs report different base accuracies ({', '.join(f'{b:.3f}' for b in bases)}); "
                "the mean is shown — were they evaluated on the same questions?"
            )
    return notes


def _unfinished(dirs: list[Path], sweep: Sweep) -> pd.DataFrame:
    """Each directory's planned points checked against its own runs (a plan names runs relative to it), those
    set aside as repeats or conflicts included: they finished."""
    frames = []
    every = pd.concat([r for r in (sweep.runs, sweep.set_aside.drop(columns="why")) if len(r)] or [sweep.runs],
                      ignore_index=True)
    for d in dirs:
        plan, problems = read_plan(d)
        sweep.problems.extend(problems)
        root = d.resolve()
        paths = pd.Series([Path(p).resolve() for p in every["path"]], index=every.index, dtype=object)
        mine = every[[root == p or root in p.parents for p in paths]]
        mine = mine.assign(run=[p.relative_to(root).as_posix() or "." for p in paths[mine.index]])
        frames.append(unfinished(plan, mine))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def build_report(sweep_dir: Path | str | list[Path | str], out_dir: Path | str | None = None,
                 use_wandb: bool = True) -> Report:
    """Read the sweep (or several sweep directories as one), write every table, figure and the HTML page;
    raise NoFinishedRuns when empty."""
    dirs = [Path(d) for d in (sweep_dir if isinstance(sweep_dir, (list, tuple)) else [sweep_dir])]
    for d in dirs:
        if not d.is_dir():
            raise NoFinishedRuns(f"{d}: no such directory")
    try:
        sweep = load_sweeps(dirs)
    except ValueError as e:
        raise NoFinishedRuns(str(e)) from None
    sweep_dir = dirs[0] if len(dirs) == 1 else sweep.root
    if sweep.runs.empty:
        bits = []
        if sweep.incomplete:
            bits.append(f"{len(sweep.incomplete)} unfinished run dir(s)")
        if sweep.problems:
            bits.append(f"{len(sweep.problems)} corrupt file(s): {sweep.problems[0]}")
        raise NoFinishedRuns(
            f"{sweep_dir}: no finished run (no valid result.json)"
            + (f"; found {', '.join(bits)}" if bits else "")
        )
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    rep = Report(out_dir=out, html=out / "report.html", threshold=pd.DataFrame())

    est = estimate(sweep)
    threshold = T.threshold_table(est, sweep)
    best = T.best_configs(est, sweep)
    trials = S.trials(sweep)
    claims, sections = _sections(est, sweep, dirs, threshold, best, trials)
    rep.threshold = threshold

    incomplete = (
        f"Incomplete sweep: {len(sweep.incomplete)} run(s) have not finished; these tables are partial."
        if sweep.incomplete
        else None
    )
    md_parts = [f"# Sweep report: {', '.join(map(str, dirs))}\n"]
    if incomplete:
        md_parts.append(f"> **{incomplete}**\n")
    for section in sections:
        rep.files.append(write_text(out / f"{section.stem}.csv", _csv(section.frame)))
        md = to_markdown(section.frame, section.title + (" (incomplete)" if incomplete else ""), incomplete)
        rep.files.append(write_text(out / f"{section.stem}.md", md))
        md_parts.append(md)

    plots = all_plots(sweep, est)
    s_plots = search_plots(trials)
    for p in plots + s_plots:
        rep.files.append(write_bytes(out / f"{p.name}.png", p.png))
    notes = _notes(sweep, est)
    if notes:
        md_parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    if sweep.problems:
        md_parts.append("## Skipped files\n\n" + "\n".join(f"- `{p}`" for p in sweep.problems) + "\n")
    rep.files.append(write_text(out / "report.md", "\n".join(md_parts)))
    rep.files.append(write_text(rep.html, _html(sweep, sections, plots, s_plots, notes, incomplete)))

    if use_wandb:
        from analysis.wandb_summary import group_of, log_summary

        group = group_of(sweep.runs, fallback=sweep_dir.resolve().name)
        summary = {
            f"{r.setting}/{r.method}/threshold_lr": r.threshold_lr
            for r in threshold.itertuples()
            if pd.notna(r.threshold_lr)
        }
        summary.update({f"{r.setting}/{r.method}/best_accuracy": r.accuracy for r in best.itertuples()})
        summary.update({f"{ACROSS}/{r.claim}/{r.scope}": r.outcome
                        for r in claims[claims["setting"] == ACROSS].itertuples()})
        tables = {section.stem: section.frame for section in sections}
        if "search_best_beta" in tables:
            for r in tables["search_best_beta"].dropna(subset=["beta"]).itertuples():
                summary[f"{r.setting}/{r.method}/search_best_beta"] = r.beta
                summary[f"{r.setting}/{r.method}/search_best_accuracy"] = r.accuracy
        rep.messages.append(log_summary(out, group, tables, plots + s_plots, summary))
    rep.messages[:0] = [f"skipped: {p}" for p in sweep.problems]
    return rep


def _sections(est: Estimates, sweep: Sweep, dirs: list[Path], threshold: pd.DataFrame, best: pd.DataFrame,
              trials: pd.DataFrame) -> tuple[pd.DataFrame, list[Section]]:
    """Every table of the report, in the report's one order (the across claims, the side-by-side thresholds,
    the subjects and the search only where they have rows); returns the per-setting claims too (W&B reads them)."""
    by_setting = T.threshold_by_setting(threshold)
    paired = T.paired_table(est, best)
    beta = T.beta_sensitivity(est)
    all_claims = claims_table(est, sweep, best, paired, beta)
    claims, across = all_claims[CLAIM_COLUMNS], across_table(all_claims)
    per_category, per_subject = SJ.subject_tables(est, sweep)
    candidates = [
        Section("claims", "The paper's claims", claims, "claims"),
        Section("claims_across", "The paper's claims across settings", across, "across", only_with_rows=True),
        Section("threshold", "Learning-rate threshold per method", threshold, "threshold"),
        Section("threshold_by_setting", "Threshold per setting, side by side", by_setting, "threshold_by_setting",
                only_with_rows=True),
        Section("threshold_comparisons", "Which method's threshold is higher", T.threshold_comparisons(est),
                "threshold_comparisons"),
        Section("best_config", "Best configuration per method", best.drop(columns="pid"), "best"),
        Section("paired", "Paired comparison of best configurations", paired, "paired"),
        Section("beta_sensitivity", "β sensitivity", beta, "beta"),
        Section("divergence", "Divergence rate per learning rate", T.divergence_table(est), "divergence"),
        Section("unfinished", "Planned points that did not finish", _unfinished(dirs, sweep), "unfinished"),
        Section("accuracy_per_category", "Accuracy per category (report split)", per_category, "categories",
                only_with_rows=True),
        Section("accuracy_per_subject", "Accuracy per subject (report split)", per_subject, "subjects",
                only_with_rows=True),
        Section("search_best_beta", "Search: best β per method", S.best_beta(trials), "search_best", "search"),
        Section("search_trials", "Search: all trials", trials[S.TRIAL_COLUMNS], "search_trials", "search"),
    ]
    sections = [c for c in candidates if (c.part != "search" or len(trials)) and (not c.only_with_rows or len(c.frame))]
    sections += [Section(f"accuracy_grid_{slug(setting)}", f"Accuracy grid — {setting}", grid, "grid", "grids")
                 for setting, grid in T.accuracy_grids(est).items()]
    sections.append(Section("runs", "All finished runs", T.run_table(est), "runs", "runs"))
    return claims, sections


def _csv(df: pd.DataFrame) -> str:
    df = df.copy()
    for c in df.columns:
        if df[c].map(lambda v: isinstance(v, list)).any():
            df[c] = df[c].map(lambda v: "; ".join(map(str, v)) if isinstance(v, list) else v)
    return df.to_csv(index=False, float_format="%.6g")


def _figures(plots: list[Plot]) -> list[str]:
    return [
        f"<h3>{html.escape(p.title)}</h3><p class='explain'>{html.escape(p.caption)}</p>"
        f"{png_img(p.png, p.title)}"
        for p in plots
    ]


def _html(
    sweep: Sweep, sections: list[Section], plots: list[Plot], s_plots: list[Plot], notes: list[str],
    incomplete: str | None
) -> str:
    r = sweep.runs
    counts = r["status"].value_counts()
    stopped = sum(counts.get(s, 0) for s in STOP_STATUSES)
    summary = (
        f"{len(r)} finished runs: {counts.get(OK, 0)} {OK}, {counts.get(DIVERGED, 0)} {DIVERGED}, "
        f"{counts.get(FAILED, 0)} {FAILED}, {stopped} stopped early; "
        f"{len(sweep.incomplete)} unfinished. "
        f"Settings: {', '.join(sorted(r['setting'].unique()))}. "
        f"Methods: {', '.join(sorted(r['method_name'].unique()))}."
    )
    parts = [f"<p>{html.escape(summary)}</p>"]
    if incomplete:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in sweep.incomplete[:50])
        more = f"<li>… and {len(sweep.incomplete) - 50} more</li>" if len(sweep.incomplete) > 50 else ""
        parts.append(f'<div class="banner"><b>{html.escape(incomplete)}</b><ul>{items}{more}</ul></div>')
    if sweep.problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in sweep.problems)
        parts.append(
            f'<div class="problems"><b>Skipped files</b> (corrupt or invalid):<ul>{items}</ul></div>'
        )
    if notes:
        parts.append(
            '<div class="banner"><b>Notes</b><ul>'
            + "".join(f"<li style='font-family:inherit'>{html.escape(n)}</li>" for n in notes)
            + "</ul></div>"
        )
    stems = {section.stem for section in sections}
    nav = [
        '<a href="#claims">claims</a>',
        '<a href="#threshold">threshold</a>',
        *(['<a href="#accuracy_per_subject">subjects</a>'] if "accuracy_per_subject" in stems else []),
        *(['<a href="#search">search</a>'] if s_plots else []),
        '<a href="#plots">plots</a>',
        '<a href="#accuracy-grids">grids</a>',
        '<a href="#runs">runs</a>',
    ]
    parts.insert(0, "<nav>" + "".join(nav) + "</nav>")
    suffix = " (incomplete)" if incomplete else ""
    in_part = {part: [section for section in sections if section.part == part]
               for part in ("tables", "search", "grids", "runs")}
    for section in in_part["tables"]:
        parts.append(
            f'<h2 id="{section.stem}">{html.escape(section.title + suffix)}</h2>'
            f'<p class="explain">{EXPLAIN[section.explain]}</p>{to_html_table(section.frame)}'
        )
    if in_part["search"]:
        parts.append(f"<h2 id=\"search\">Search{suffix}</h2>")
        for section in in_part["search"]:
            parts.append(
                f"<h3>{html.escape(section.title)}</h3><p class=\"explain\">{EXPLAIN[section.explain]}</p>"
                f"{to_html_table(section.frame)}"
            )
        parts.extend(_figures(s_plots))
    parts.append('<h2 id="plots">Figures</h2>')
    parts.extend(_figures(plots))
    parts.append(
        f'<h2 id="accuracy-grids">Accuracy grids{suffix}</h2><p class="explain">{EXPLAIN["grid"]}</p>'
    )
    for section in in_part["grids"]:
        parts.append(f"<h3>{html.escape(section.title)}</h3>{to_html_table(section.frame)}")
    for section in in_part["runs"]:
        parts.append(
            f'<h2 id="runs">{html.escape(section.title)}</h2><p class="explain">{EXPLAIN[section.explain]}</p>'
            f"{to_html_table(section.frame)}"
        )
    parts.append(
        "<p class='meta'>Every table is also in this directory as CSV and Markdown; figures as PNG.</p>"
    )
    meta = (
        f"Sweep <code>{html.escape(str(sweep.root))}</code> · generated "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by <code>python -m analysis.report</code>"
    )
    return html_page("sftsweep report" + suffix, meta, "\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path, nargs="+",
                    help="directory holding the sweep's run directories (any depth); several are read as one sweep")
    ap.add_argument("--out", type=Path, default=None,
                    help="report directory (default: SWEEP_DIR/report; with several, their common parent's report/)")
    ap.add_argument("--no-wandb", action="store_true", help="do not log the W&B summary run")
    args = ap.parse_args(argv)
    try:
        rep = build_report(args.sweep_dir, args.out, use_wandb=not args.no_wandb)
    except NoFinishedRuns as e:
        print(f"analysis.report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the runs were read; their report could not be written
        if not no_space(e):
            raise
        out = args.out or args.sweep_dir[0] / "report"
        print(f"analysis.report: could not write the report: {no_space_message(out)}", file=sys.stderr)
        return 1
    for m in rep.messages:
        print(m, file=sys.stderr)
    print(f"report: {rep.html}")
    print(to_markdown(rep.threshold, "Learning-rate threshold per method"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
