"""The W&B comparison of a sweep's methods, as code (wandb-workspaces), instead of clicks per project.

    python -m analysis.dashboard SWEEP_DIR --entity E --project P

From the sweep's run directories (its W&B group and the methods it ran) this builds
- a **workspace** (a saved view) filtered to the group, runs grouped by method then learning rate:
  train and eval mθ against step, final accuracy against lr, and the summary run's tables;
- a **report** with one panel grid per method (its runs only, one line per lr): train and eval mθ
  against step; a grid with one run set per method: final accuracy against lr (log x); and the
  threshold, claims and claims-across-settings tables of the `<group>-report` run (analysis.wandb_summary).

Nothing is sent unless WANDB_MODE=online: offline (the default everywhere here) the specification is
written to SWEEP_DIR/report/wandb_dashboard.json and the one command that publishes it is printed.
A failed publish falls back to the same; this never waits on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainers.runtime.run_dir import atomic_write_text as write_text

# The keys the jobs log (transformers' WandbCallback prefixes train/ and eval/; trainers.job.tracking
# sends the resolved Hydra config, which W&B shows with dotted names) and the summary run's tables.
TRAIN_M_THETA, EVAL_M_THETA, ACCURACY = "train/m_theta", "eval/m_theta", "eval/accuracy"
METHOD, LR = "method.name", "train.lr"
TABLES = ("threshold", "claims", "claims_across")
"""The summary run's tables; claims_across only with several settings (a one-setting report has none)."""
SPEC_FILE = "wandb_dashboard.json"


def sweep_facts(sweep_dir: Path) -> tuple[str, list[str], int]:
    """(W&B group, methods present, number of settings) of a sweep, read from its run directories."""
    from analysis.rundirs import load_sweep
    from analysis.wandb_summary import group_of

    runs = load_sweep(sweep_dir).runs
    if runs.empty:
        raise ValueError(f"{sweep_dir}: no finished run directories (result.json) to build a dashboard for")
    return (group_of(runs, fallback=Path(sweep_dir).resolve().name), sorted(runs["method"].dropna().unique()),
            int(runs["setting"].nunique()))


def _group_filter(group: str, method: str | None = None) -> str:
    where = f"Group = '{group}'"
    return where + (f" and Config('{METHOD}') = '{method}'" if method else "")


def _curves(wr: Any, method: str | None = None) -> list:
    """Train and eval mθ against step, one line per lr (per method and lr when `method` is None)."""
    scope = f"{method}: " if method else ""
    return [
        wr.LinePlot(title=f"{scope}train mθ against step", x="Step", y=[TRAIN_M_THETA], groupby=wr.Config(LR)),
        wr.LinePlot(title=f"{scope}eval mθ against step", x="Step", y=[EVAL_M_THETA], groupby=wr.Config(LR)),
    ]


def _accuracy(wr: Any) -> Any:
    return wr.ScatterPlot(title="final accuracy against learning rate", x=wr.Config(LR),
                          y=wr.SummaryMetric(ACCURACY), log_x=True)


def _tables(wr: Any, settings: int) -> list:
    return [wr.WeavePanelSummaryTable(table_name=f"tables/{t}") for t in TABLES
            if settings > 1 or t != "claims_across"]


def build_report(entity: str, project: str, group: str, methods: Sequence[str], settings: int = 1) -> Any:
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str, filters: str, groupby: list[str]) -> Any:
        return wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=groupby)

    blocks: list = [
        wr.H1(text=f"Methods compared: {group}"),
        wr.P(text=f"sftsweep sweep '{group}': mθ (the paper's deviation metric) per method, one line per "
                  "learning rate; final accuracy against learning rate; the report's threshold and claims, each "
                  "claim per setting and across settings."),
    ]
    for method in methods:
        blocks += [wr.H2(text=f"{method}: deviation mθ"),
                   wr.PanelGrid(runsets=[runset(method, _group_filter(group, method), [f"config.{LR}"])],
                                panels=_curves(wr, method))]
    blocks += [
        wr.H2(text="Accuracy against learning rate"),
        wr.PanelGrid(runsets=[runset(m, _group_filter(group, m), []) for m in methods], panels=[_accuracy(wr)]),
        wr.H2(text="Learning-rate threshold and the paper's claims, per setting and across settings"),
        wr.PanelGrid(runsets=[runset("report", f"Group = '{group}' and JobType = 'analysis'", [])],
                     panels=_tables(wr, settings)),
    ]
    return wr.Report(entity=entity, project=project, title=f"sftsweep: {group}"[:128], blocks=blocks,
                     description="Built by `python -m analysis.dashboard` from the sweep's run directories.")


def build_workspace(entity: str, project: str, group: str, settings: int = 1) -> Any:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    return ws.Workspace(
        entity=entity, project=project, name=f"sftsweep: {group}",
        sections=[ws.Section(name="Deviation mθ by method and lr", panels=_curves(wr), is_open=True),
                  ws.Section(name="Accuracy against learning rate", panels=[_accuracy(wr)], is_open=True),
                  ws.Section(name="Threshold and claims, across settings too", panels=_tables(wr, settings),
                             is_open=True)],
        runset_settings=ws.RunsetSettings(filters=_group_filter(group),
                                          groupby=[expr.Config(METHOD), expr.Config(LR)]),
    )


def _name(value: Any) -> str | None:
    """A panel's axis/grouping as `config:<field>`, `summary:<key>` or `<history key>`."""
    import wandb_workspaces.reports.v2 as wr

    if value is None:
        return None
    if isinstance(value, wr.Config):
        return f"config:{value.name}"
    if isinstance(value, wr.SummaryMetric):
        return f"summary:{value.name}"
    return value.name if isinstance(value, wr.Metric) else str(value)


def _panel_row(where: str, section: str, panel: Any, runsets: list[dict[str, Any]]) -> dict[str, Any]:
    import wandb_workspaces.reports.v2 as wr

    row: dict[str, Any] = {"in": where, "section": section, "panel": type(panel).__name__, "runsets": runsets}
    if isinstance(panel, wr.WeavePanelSummaryTable):
        return {**row, "title": panel.table_name, "y": [f"summary:{panel.table_name}"]}
    ys = panel.y if isinstance(panel.y, list) else [panel.y]
    return {**row, "title": panel.title, "x": _name(panel.x), "y": [_name(y) for y in ys],
            "groupby": _name(getattr(panel, "groupby", None))}


def panel_list(report: Any, workspace: Any) -> list[dict[str, Any]]:
    """Every panel of the report, then of the workspace, with the run sets it reads, in order."""
    import wandb_workspaces.reports.v2 as wr

    rows, heading = [], ""
    for block in report.blocks:
        if isinstance(block, wr.H2):
            heading = block.text if isinstance(block.text, str) else str(block.text)
        if isinstance(block, wr.PanelGrid):
            runsets = [{"name": r.name, "filters": r.filters, "groupby": list(r.groupby)} for r in block.runsets]
            rows += [_panel_row("report", heading, p, runsets) for p in block.panels]
    settings = workspace.runset_settings
    runsets = [{"name": "workspace", "filters": settings.filters,
                "groupby": [f"config.{g.name}" for g in settings.groupby]}]
    for section in workspace.sections:
        rows += [_panel_row("workspace", section.name, p, runsets) for p in section.panels]
    return rows


def referenced_keys(panels: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(history/summary keys, config fields) that the panels read, for checking against what runs log."""
    metrics, config = set(), set()
    for row in panels:
        for name in [row.get("x"), row.get("groupby"), *row["y"]]:
            if not name or name == "Step":
                continue
            kind, _, key = name.rpartition(":")
            (config if kind == "config" else metrics).add(key)
        for rs in row["runsets"]:
            config.update(re.findall(r"Config\('([^']+)'\)", rs["filters"]))
            config.update(g.removeprefix("config.") for g in rs["groupby"])
    return metrics, config


def specification(sweep_dir: Path, entity: str, project: str) -> tuple[dict[str, Any], Any, Any]:
    """(the JSON specification, the report, the workspace) for a sweep."""
    from pydantic import TypeAdapter
    from wandb_workspaces.reports.v2 import Report

    group, methods, settings = sweep_facts(sweep_dir)
    report = build_report(entity, project, group, methods, settings)
    workspace = build_workspace(entity, project, group, settings)
    spec = {
        "entity": entity, "project": project, "group": group, "methods": methods,
        "panels": panel_list(report, workspace),
        "report": TypeAdapter(Report).dump_python(report, mode="json"),
        # the workspace's wire form (what wandb-workspaces sends); the report's needs the W&B API to resolve
        "workspace": workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    return spec, report, workspace


def publish(report: Any, workspace: Any) -> list[str]:
    """Save both to W&B (needs `wandb login` and the network); returns their URLs."""
    saved_report, saved_workspace = report.save(), workspace.save()
    return [saved_report.url, saved_workspace.url]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (or WANDB_ENTITY)")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "sftsweep"),
                        help="W&B project (or WANDB_PROJECT; default sftsweep, as conf/logger/wandb.yaml)")
    args = parser.parse_args(argv)
    online = os.environ.get("WANDB_MODE", "offline") == "online"
    if online and not args.entity:
        print("error: --entity is needed to publish (or set WANDB_ENTITY), e.g. --entity my-team", file=sys.stderr)
        return 2
    try:
        spec, report, workspace = specification(args.sweep_dir, args.entity or "<entity>", args.project)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = write_text(args.sweep_dir / "report" / SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    print(f"[dashboard] {spec['group']}: {len(spec['panels'])} panels for {', '.join(spec['methods'])} -> {out}")
    for p in spec["panels"]:
        print(f"[dashboard]   {p['in']} / {p['section']}: {p['title']} ({p['panel']})")
    if online:
        try:
            for url in publish(report, workspace):
                print(f"[dashboard] saved {url}")
            return 0
        except Exception as exc:  # no key, no network: keep the specification, say how to retry
            print(f"[dashboard] not published: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    python = os.path.relpath(sys.executable) if Path(sys.executable).is_relative_to(Path.cwd()) else sys.executable
    print(f"[dashboard] to publish: wandb login && WANDB_MODE=online {python} -m analysis.dashboard "
          f"{args.sweep_dir} --entity {args.entity or '<entity>'} --project {args.project}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
