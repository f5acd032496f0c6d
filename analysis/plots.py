"""The report's figures, as PNG bytes (matplotlib's object API with the Agg canvas: no display, no pyplot
global state, safe in a headless sweep process).

With several settings first the settings side by side: accuracy against lr, one panel per setting (the
paper's "accuracy against learning rate on three data sets"). Then per setting:
mθ against step (train and eval, one panel per method, one line per lr), accuracy against lr
(log axis, threshold marked), and final mθ against accuracy. At each lr the lines use the β that the
tables use (the best one), so figures and tables never disagree.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; harmless if already set

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import cm, colormaps  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import method_name, method_sort_key  # noqa: E402
from analysis.estimate import Estimates  # noqa: E402
from analysis.rundirs import Sweep  # noqa: E402
from analysis.tables import fmt_beta, fmt_lr  # noqa: E402
from trainers.runtime.run_dir import OK, STOPPED  # noqa: E402

METHOD_COLORS = {"sft": "tab:blue", "dpo_sft": "tab:orange", "minor_sft": "tab:green"}
OTHER_COLORS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
BETA_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
DPI = 110


@dataclass
class Plot:
    name: str  # file stem, e.g. "accuracy_vs_lr_world"
    title: str
    caption: str
    png: bytes


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "all"


def method_color(method: str, methods: list[str]) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    others = [m for m in methods if m not in METHOD_COLORS]
    return OTHER_COLORS[others.index(method) % len(OTHER_COLORS)] if method in others else "black"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _lr_norm(lrs: list[float]):
    lo, hi = min(lrs), max(lrs)
    return LogNorm(lo, hi) if hi > lo else Normalize(lo * 0.5, hi * 1.5)


def _chosen_runs(
    sweep: Sweep, setting: str, method: str, curve: pd.DataFrame
) -> list[tuple[float, float, list[str], str]]:
    """(lr, β, runs, status) per lr: the curve's β when some seed finished ok, else the lowest β run there
    (so diverged learning rates still show their mθ until they blew up)."""
    runs = sweep.runs[(sweep.runs["setting"] == setting) & (sweep.runs["method"] == method)]
    out = []
    for r in curve.itertuples():
        at = runs[runs["lr"] == r.lr]
        beta = r.beta if r.status == OK else at["beta"].sort_values(na_position="first").iloc[0]
        sel = at[(at["beta"] == beta) | (at["beta"].isna() & (isinstance(beta, float) and math.isnan(beta)))]
        out.append((r.lr, beta, list(sel["run"]), r.status))
    return out


def m_theta_curves(sweep: Sweep, setting: str, crv: dict) -> Plot:
    """mθ against step: train (metrics.jsonl) and eval (eval.jsonl) rows, one column per method."""
    methods = sorted((m for s, m in crv if s == setting), key=method_sort_key)
    all_lrs = sorted({lr for m in methods for lr in crv[(setting, m)]["lr"]})
    norm, cmap = _lr_norm(all_lrs), colormaps["viridis"]
    fig = Figure(figsize=(4.6 * len(methods), 7.0), layout="constrained")
    axes = fig.subplots(2, len(methods), squeeze=False, sharex="col")
    for j, method in enumerate(methods):
        for i, (frame, kind) in enumerate(((sweep.metrics, "train"), (sweep.evals, "eval"))):
            ax = axes[i][j]
            drawn = 0
            for lr, beta, runs, status in _chosen_runs(sweep, setting, method, crv[(setting, method)]):
                if "m_theta" not in frame.columns:
                    break
                d = frame[frame["run"].isin(runs)].dropna(subset=["m_theta"])
                if d.empty:
                    continue
                mean = d.groupby("step")["m_theta"].mean()
                label = f"lr {fmt_lr(lr)}" + (f" β={fmt_beta(beta)}" if not math.isnan(beta) else "")
                if status == STOPPED:
                    label += f" (stopped at step {int(d['step'].max())})"
                elif status != OK:
                    label += f" ({status})"
                ax.plot(
                    mean.index,
                    mean.values,
                    color=cmap(norm(lr)),
                    lw=1.6,
                    ls="-" if status == OK else "--",
                    marker="." if len(mean) < 30 else None,
                    label=label,
                )
                drawn += 1
            if drawn:
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(
                    0.5,
                    0.5,
                    f"no {kind} mθ logged",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="gray",
                )
            ax.axhline(0, color="gray", lw=0.6)
            ax.set_title(f"{method_name(method)} — {kind}", fontsize=10)
            ax.set_ylabel(f"mθ ({kind})" if j == 0 else "")
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("step")
    fig.suptitle(f"{setting}: deviation mθ = (log πθ − log πref)/m against step", fontsize=11)
    return Plot(
        f"m_theta_vs_step_{slug(setting)}",
        f"mθ against step — {setting}",
        "One panel per method, one line per learning rate (the best β at that lr, mean over seeds); "
        "dashed lines are learning rates where no seed finished ok (a stopped one ends where the sweeper "
        "stopped it). Top: training batches "
        "(metrics.jsonl); bottom: held-out eval (eval.jsonl, step 0 = base model).",
        _png(fig),
    )


def _lr_axes(fig: Figure, n: int, base: float) -> list:
    """n panels sharing the accuracy axis, each on a log lr axis with the base model's accuracy dotted."""
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        if math.isfinite(base):
            ax.axhline(base, color="gray", ls=":", lw=1.2, label=f"base {base:.3f}")
        ax.set_xlabel("learning rate")
    return axes


def _best_beta_curve(ax, method: str, color: str, curve: pd.DataFrame, mp: pd.DataFrame) -> None:
    """The method's best-β accuracy at each lr, with the seed s.d. of that β's point as error bars."""
    ok = curve[curve["status"] == OK]
    sd = [
        mp.loc[
            (mp["lr"] == r.lr) & ((mp["beta"] == r.beta) | (mp["beta"].isna() & math.isnan(r.beta))),
            "accuracy_sd",
        ].iloc[0]
        for r in ok.itertuples()
    ]
    ax.errorbar(ok["lr"], ok["accuracy"], yerr=np.nan_to_num(np.asarray(sd, dtype=float)), color=color, marker="o",
                capsize=3, label=method_name(method))


def _beta_lines(ax, method: str, color: str, mp: pd.DataFrame) -> None:
    """One line per β of the method (its points with a finished seed), fading with each further β."""
    for k, (beta, g) in enumerate(mp.groupby("beta", dropna=False, sort=True)):
        g = g[g["n_ok"] > 0].sort_values("lr")
        lab = method_name(method) if math.isnan(beta) else f"β={beta:g}"
        ax.plot(g["lr"], g["accuracy"], color=color, marker=BETA_MARKERS[k % len(BETA_MARKERS)],
                alpha=1.0 - 0.25 * min(k, 3), lw=1.4, label=lab)


def _unscored_marks(axes: tuple, color: str, curve: pd.DataFrame) -> None:
    """Red × at lrs where no seed finished ok; an open ▽ at a stopped lr's last intermediate accuracy (evidence,
    not a score: where the sweeper saw it, at an earlier step). Labelled in the last panel of `axes` only."""
    bad = curve[~curve["status"].isin([OK, STOPPED])]
    stopped = curve[curve["status"] == STOPPED]
    for a in axes:
        labelled = a is axes[-1]
        if len(bad):
            a.scatter(bad["lr"], np.zeros(len(bad)), marker="x", color="red", s=50, zorder=5,
                      label="diverged/failed" if labelled else None)
        if len(stopped):
            a.scatter(stopped["lr"], stopped["stop_accuracy"], marker="v", facecolor="none", edgecolor=color,
                      s=60, zorder=5, label="stopped early (last eval)" if labelled else None)


def _threshold_marks(axes: tuple, color: str, peak) -> str:
    """★ at the threshold in every panel of `axes`; its lr line and the vertex's 95% band in the last one. The
    title's suffix: " — not bracketed" where the peak is an end of the grid."""
    for a in axes:
        a.scatter([peak.lr], [peak.select_accuracy], marker="*", s=220, color=color, edgecolor="black", zorder=6)
    ax = axes[-1]
    ax.axvline(peak.lr, color=color, ls="--", lw=1, label=f"threshold lr {fmt_lr(peak.lr)}")
    if math.isfinite(peak.lr_ci_low) and peak.lr_ci_high > peak.lr_ci_low:
        ax.axvspan(peak.lr_ci_low, peak.lr_ci_high, color=color, alpha=0.12,
                   label=f"vertex {fmt_lr(peak.vertex_lr)}, 95% interval")
    return " — not bracketed" if peak.bracket else ""


def accuracy_vs_lr(sweep: Sweep, setting: str, crv: dict, pts: pd.DataFrame, peaks: dict) -> Plot:
    """Accuracy against lr (log axis): all methods' best-β curves, then one panel per method with each β."""
    methods = sorted((m for s, m in crv if s == setting), key=method_sort_key)
    sp = pts[pts["setting"] == setting]
    fig = Figure(figsize=(4.4 * (len(methods) + 1), 4.2), layout="constrained")
    axes = _lr_axes(fig, len(methods) + 1, sp["base_accuracy"].mean())
    axes[0].set_ylabel("accuracy (selection split)")
    axes[0].set_title("best β at each lr", fontsize=10)
    for ax, method in zip(axes[1:], methods, strict=True):
        color, curve, mp = method_color(method, methods), crv[(setting, method)], sp[sp["method"] == method]
        _best_beta_curve(axes[0], method, color, curve, mp)
        _beta_lines(ax, method, color, mp)
        _unscored_marks((axes[0], ax), color, curve)
        peak = peaks[(setting, method)]
        suffix = _threshold_marks((axes[0], ax), color, peak) if peak is not None else ""
        ax.set_title(method_name(method) + suffix, fontsize=10)
        ax.legend(fontsize=7, loc="best")
    axes[0].legend(fontsize=7, loc="best")
    lrs = sorted(sp["lr"].unique())
    if len(lrs) == 1:  # e.g. a β search at one lr: autoscale leaves a log axis of zero width
        for ax in axes:
            ax.set_xlim(lrs[0] / 3, lrs[0] * 3)
    fig.suptitle(
        f"{setting}: accuracy against learning rate (★ = threshold: peak of the best-β curve)", fontsize=11
    )
    return Plot(
        f"accuracy_vs_lr_{slug(setting)}",
        f"Accuracy against learning rate — {setting}",
        "Left: each method at its best β per lr (mean over seeds, bars = seed s.d.). Then one panel "
        "per method with every β. ★ marks the threshold lr (argmax on the selection split), the shaded band "
        "the 95% resampled interval of its log-quadratic vertex; red × marks learning rates where no seed "
        "finished ok; an open ▽ a learning rate the sweeper stopped early as past the threshold, at its last "
        "intermediate selection accuracy (an earlier step, not a score); the dotted line is the base model.",
        _png(fig),
    )


def accuracy_vs_lr_by_setting(est: Estimates) -> Plot:
    """Accuracy against lr, one panel per setting on a shared accuracy axis: every method's best-β curve, its
    threshold marked (★ and a dashed line), so the settings' thresholds can be compared at a glance."""
    settings = sorted({s for s, _ in est.curves})
    methods = sorted({m for _, m in est.curves}, key=method_sort_key)
    fig = Figure(figsize=(4.4 * len(settings), 4.2), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    for ax, setting in zip(axes, settings, strict=True):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        base = est.points.loc[est.points["setting"] == setting, "base_accuracy"].mean()
        if math.isfinite(base):
            ax.axhline(base, color="gray", ls=":", lw=1.2, label=f"base {base:.3f}")
        for method in methods:
            if (setting, method) not in est.curves:
                continue
            color, curve = method_color(method, methods), est.curves[(setting, method)]
            ok = curve[curve["status"] == OK]
            ax.plot(ok["lr"], ok["accuracy"], color=color, marker="o", lw=1.4, label=method_name(method))
            peak = est.peaks[(setting, method)]
            if peak is not None:
                ax.scatter([peak.lr], [peak.select_accuracy], marker="*", s=220, color=color, edgecolor="black",
                           zorder=6)
                edge = ", not bracketed" if peak.bracket else ""
                ax.axvline(peak.lr, color=color, ls="--", lw=1,
                           label=f"{method_name(method)} threshold {fmt_lr(peak.lr)}{edge}")
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("accuracy (selection split)")
    fig.suptitle("accuracy against learning rate, per setting (★ = threshold: peak of the best-β curve)", fontsize=11)
    return Plot(
        "accuracy_vs_lr_by_setting",
        "Accuracy against learning rate — settings side by side",
        "One panel per setting, shared accuracy axis: each method at its best β per lr (mean over seeds, "
        "selection split). ★ and the dashed line mark each method's threshold lr in that setting; the dotted "
        "line is the setting's base model. The per-setting figures below add every β and the vertex interval.",
        _png(fig),
    )


def m_theta_vs_accuracy(sweep: Sweep, setting: str, crv: dict, pts: pd.DataFrame, peaks: dict) -> Plot:
    """Final eval mθ against accuracy, every ok run, lines joining a (method, β) across learning rates."""
    methods = sorted((m for s, m in crv if s == setting), key=method_sort_key)
    sp = pts[(pts["setting"] == setting) & (pts["n_ok"] > 0)]
    runs = sweep.runs[(sweep.runs["setting"] == setting) & (sweep.runs["status"] == OK)]
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.subplots()
    for method in methods:
        color = method_color(method, methods)
        for k, (beta, g) in enumerate(sp[sp["method"] == method].groupby("beta", dropna=False, sort=True)):
            g = g.sort_values("lr")
            lab = method_name(method) + ("" if math.isnan(beta) else f" β={beta:g}")
            mk = BETA_MARKERS[k % len(BETA_MARKERS)]
            ax.plot(g["m_theta"], g["accuracy"], color=color, marker=mk, lw=1, alpha=0.85, label=lab)
            r = runs[
                (runs["method"] == method)
                & ((runs["beta"] == beta) | (runs["beta"].isna() & math.isnan(beta)))
            ]
            ax.scatter(r["m_theta"], r["accuracy"], color=color, marker=mk, s=12, alpha=0.35)
            for row in g.itertuples():
                ax.annotate(
                    fmt_lr(row.lr),
                    (row.m_theta, row.accuracy),
                    fontsize=6,
                    alpha=0.7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        peak = peaks[(setting, method)]
        if peak is not None:
            mt = sp[
                (sp["method"] == method)
                & (sp["lr"] == peak.lr)
                & ((sp["beta"] == peak.beta) | (sp["beta"].isna() & math.isnan(peak.beta)))
            ]["m_theta"]
            if len(mt):
                ax.scatter(mt, [peak.select_accuracy], marker="*", s=260, color=color, edgecolor="black", zorder=5)
    base = pts.loc[pts["setting"] == setting, "base_accuracy"].mean()
    if math.isfinite(base):
        ax.scatter([0], [base], marker="P", s=90, color="black", label=f"base ({base:.3f})", zorder=5)
    ax.set_xlabel("final mθ on the eval set (deviation from the base model, nats/token)")
    ax.set_ylabel("accuracy (selection split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{setting}: final mθ against accuracy (★ = best configuration)", fontsize=11)
    return Plot(
        f"m_theta_vs_accuracy_{slug(setting)}",
        f"Final mθ against accuracy — {setting}",
        "Each line is one method and β across learning rates (labels: lr), means over seeds; faint dots "
        "are single runs; ★ is each method's best configuration. Further right = further from the base "
        "model.",
        _png(fig),
    )


def all_plots(sweep: Sweep, est: Estimates) -> list[Plot]:
    """Every figure of the report, per setting; curves and peaks are the tables' own (analysis.estimate)."""
    crv, pts, peaks = est.curves, est.points, est.peaks
    plots = [accuracy_vs_lr_by_setting(est)] if len({s for s, _ in crv}) > 1 else []
    for setting in sorted({s for s, _ in crv}):
        plots.append(accuracy_vs_lr(sweep, setting, crv, pts, peaks))
        plots.append(m_theta_curves(sweep, setting, crv))
        plots.append(m_theta_vs_accuracy(sweep, setting, crv, pts, peaks))
    return plots


# --------------------------------------------------------------------------- searches (analysis.search)


def _search_panels(tr: pd.DataFrame, setting: str, width: float = 5.2):
    """One panel per searched method of a setting: (figure, [(method id, trials, axes)])."""
    st = tr[tr["setting"] == setting]
    methods = sorted(st["method_id"].unique(), key=method_sort_key)
    fig = Figure(figsize=(width * len(methods), 4.2), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    return fig, [(m, st[st["method_id"] == m], ax) for m, ax in zip(methods, axes, strict=True)]


def _mark_not_ok(ax, x, g: pd.DataFrame) -> None:
    """Diverged/failed trials as red × on the x axis: they have no accuracy, and must still be seen."""
    bad = g[g["status"] != OK]
    if len(bad):
        ax.scatter(x[bad.index], np.zeros(len(bad)), marker="x", color="red", s=60, zorder=5,
                   label=f"diverged/failed ({len(bad)})", clip_on=False)


def _base_line(ax, g: pd.DataFrame) -> None:
    base = g["base_accuracy"].mean()
    if math.isfinite(base):
        ax.axhline(base, color="gray", ls=":", lw=1.2, label=f"base {base:.3f}")


def optimisation_history(tr: pd.DataFrame, setting: str) -> Plot:
    """Accuracy of each trial in finish order, with the running best as a step line."""
    fig, panels = _search_panels(tr, setting)
    methods = [m for m, _, _ in panels]
    for method, g, ax in panels:
        color = method_color(method, methods)
        ok = g[g["status"] == OK]
        ax.scatter(ok["trial"], ok["accuracy"], color=color, s=30, zorder=4, label="trial (ok)")
        ax.step(g["trial"], g["running_best"], where="post", color=color, lw=1.6, label="running best")
        _mark_not_ok(ax, g["trial"], g)
        _base_line(ax, g)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("trial (finish order)")
        ax.set_title(f"{method_name(method)} — {len(g)} trials", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    panels[0][2].set_ylabel("accuracy (held-out)")
    fig.suptitle(f"{setting}: optimisation history", fontsize=11)
    return Plot(
        f"optimisation_history_{slug(setting)}",
        f"Optimisation history — {setting}",
        "One panel per searched method: each trial's accuracy in the order trials finished (finished_at, "
        "else result.json's mtime), and the best so far as a step line. Red × on the axis: trials that "
        "diverged or failed (no accuracy). Dotted: the base model.",
        _png(fig),
    )


def beta_vs_accuracy(tr: pd.DataFrame, setting: str) -> Plot:
    """Accuracy against β (log axis) of every trial; colour = lr when the search sampled it too."""
    fig, panels = _search_panels(tr, setting)
    methods = [m for m, _, _ in panels]
    lrs = sorted(tr.loc[tr["setting"] == setting, "lr"].unique())
    norm, cmap = _lr_norm(lrs), colormaps["viridis"]
    for method, g, ax in panels:
        ok = g[g["status"] == OK]
        colors = [cmap(norm(lr)) for lr in ok["lr"]] if len(lrs) > 1 else method_color(method, methods)
        label = "trial (ok)" if len(lrs) > 1 else f"trial (ok), lr {fmt_lr(lrs[0])}"
        ax.scatter(ok["beta"], ok["accuracy"], c=colors, s=34, zorder=4, edgecolor="black", lw=0.4,
                   label=label)
        if len(ok):
            best = ok.loc[ok["accuracy"].idxmax()]
            ax.scatter([best["beta"]], [best["accuracy"]], marker="*", s=240, zorder=6, edgecolor="black",
                       color=method_color(method, methods), label=f"best β={fmt_beta(best['beta'])}")
        _mark_not_ok(ax, g["beta"], g)
        _base_line(ax, g)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("β")
        ax.set_title(method_name(method), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    panels[0][2].set_ylabel("accuracy (held-out)")
    if len(lrs) > 1:
        sm = cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=[ax for _, _, ax in panels], label="learning rate")
    fig.suptitle(f"{setting}: β against accuracy (search trials)", fontsize=11)
    return Plot(
        f"beta_vs_accuracy_{slug(setting)}",
        f"β against accuracy — {setting}",
        "Every search trial: β (log axis) against accuracy; colour = learning rate when the search "
        "sampled it too. ★ is the best trial; red × on the axis are trials that diverged or failed. "
        "Dotted: the base model.",
        _png(fig),
    )


def search_plots(tr: pd.DataFrame) -> list[Plot]:
    """The search figures, per setting that has a search (none when `tr` is empty)."""
    plots = []
    for setting in sorted(tr["setting"].unique()):
        plots.append(optimisation_history(tr, setting))
        plots.append(beta_vs_accuracy(tr, setting))
    return plots
