"""Turn the tables' DataFrames into text a person reads: Markdown, HTML tables, one self-contained page.

Tables keep raw numbers (CSV is for machines); this module alone decides how numbers look, so every
output format shows the same digits: learning rates as 3e-4, accuracies to 3 decimals, differences
signed, the two interval ends as one "[lo, hi]" column.
"""

from __future__ import annotations

import base64
import html
import math
import numbers

import pandas as pd

from analysis.tables import fmt_beta, fmt_lr
from trainers.runtime.run_dir import DIVERGED, FAILED, OK

LR_COLUMNS = {"lr", "threshold_lr", "next_lr", "bracket_low", "bracket_high", "vertex_lr", "lr_ci_low", "lr_ci_high",
              "baseline_vertex_lr"}
SIGNED_COLUMNS = {"delta", "gain_over_base", "drop"}
BETA_COLUMNS = {"beta", "worst_beta"}
INT_COLUMNS = {"n_seeds", "n_questions", "seed", "steps", "eval_n", "train_n"}
INT_COLUMNS |= {"trial", "n_trials", "n_ok", "n_diverged", "n_failed"}  # analysis.search
INT_COLUMNS |= {"n_runs", "n_betas", "n_stopped", "n_settings"}
MTHETA_COLUMNS = {"m_theta", "train_m_theta", "abs_m_theta"}
HEADERS = {
    "threshold_lr": "threshold lr",
    "beta": "β",
    "ci_method": "interval",
    "n_seeds": "seeds",
    "next_lr": "next lr",
    "accuracy_next_lr": "accuracy at next lr",
    "gain_over_base": "gain over base",
    "base_accuracy": "base accuracy",
    "m_theta": "final mθ (eval)",
    "abs_m_theta": "final |mθ| (eval)",
    "train_m_theta": "mθ (train, last quarter)",
    "select_accuracy": "accuracy (selection)",
    "accuracy": "accuracy (report)",
    "report_accuracy": "accuracy (report)",
    "worst_beta": "worst β",
    "worst_accuracy": "worst β accuracy",
    "bracket_low": "bracket from",
    "bracket_high": "bracket to",
    "vertex_lr": "vertex lr",
    "lr_ci_low": "vertex 95% from",
    "lr_ci_high": "vertex 95% to",
    "p_argmax": "P(argmax)",
    "p_greater": "P(A > B)",
    "p_equal": "P(equal)",
    "baseline_vertex_lr": "B vertex lr",
    "seed_sd": "seed s.d.",
    "question_se": "question s.e.",
    "divergence_rate": "divergence rate",
    "baseline_config": "baseline config",
    "baseline_accuracy": "baseline accuracy",
    "delta": "Δ accuracy",
    "p_value": "p",
    "n_questions": "questions",
    "wall_s": "wall s",
    "tokens_per_s": "tokens/s",
    "n_trials": "trials",
    "n_ok": str(OK),
    "n_diverged": str(DIVERGED),
    "n_failed": str(FAILED),
    "n_stopped": "stopped early",
}


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_cell(column: object, value: object) -> str:
    """One cell as text, by what its column holds; NaN/None → "—", strings pass through."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if not isinstance(value, numbers.Number):
        return str(value)
    v = float(value)
    if isinstance(column, float):  # a learning-rate column of an accuracy grid
        return f"{v:.3f}"
    if column in LR_COLUMNS:
        return fmt_lr(v)
    if column in BETA_COLUMNS:
        return fmt_beta(v)
    if column == "p_value":
        return fmt_p(v)
    if column in SIGNED_COLUMNS:
        return f"{v:+.3f}"
    if column in INT_COLUMNS:
        return str(int(round(v)))
    if column in MTHETA_COLUMNS:
        return f"{v:.4g}"
    if column in ("wall_s", "tokens_per_s"):
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    return f"{v:.3f}"


def format_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of df as display strings with readable headers; ci_low/ci_high become one "95% CI" column."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col == "ci_high" or col == "method_id":
            continue
        if col == "ci_low" and "ci_high" in df.columns:
            out["95% CI"] = [
                "—"
                if pd.isna(lo) or pd.isna(hi)
                else f"[{lo:+.3f}, {hi:+.3f}]"
                if "delta" in df.columns
                else f"[{lo:.3f}, {hi:.3f}]"
                for lo, hi in zip(df["ci_low"], df["ci_high"], strict=True)
            ]
            continue
        header = (
            f"lr {fmt_lr(col)}" if isinstance(col, float) else HEADERS.get(col, str(col).replace("_", " "))
        )
        out[header] = [format_cell(col, v) for v in df[col]]
    return out.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str | None = None, note: str | None = None) -> str:
    """GitHub-flavoured pipe table (no tabulate dependency)."""
    f = format_frame(df)
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = []
    if title:
        lines += [f"## {title}", ""]
    if note:
        lines += [f"> {note}", ""]
    lines.append("| " + " | ".join(esc(c) for c in f.columns) + " |")
    lines.append("|" + "|".join("---" for _ in f.columns) + "|")
    for row in f.itertuples(index=False):
        lines.append("| " + " | ".join(esc(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _cell_class(text: str) -> str:
    t = text.lower()
    if t == "holds":
        return "good"
    if t == "does not hold" or t.startswith((DIVERGED, FAILED)) or f"{DIVERGED})" in t or f"{FAILED})" in t:
        return "bad"
    if t in ("not measured", "undecided") or t.startswith(("threshold not bracketed", "no threshold")):
        return "warn"
    return ""


def to_html_table(df: pd.DataFrame) -> str:
    """An HTML table; cells that say diverged/failed/holds/not measured get a colour class."""
    f = format_frame(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in f.columns)
    body = []
    for row in f.itertuples(index=False):
        cells = []
        for c in row:
            cls = " ".join(x for x in (_cell_class(str(c)), "nw" if len(str(c)) <= 16 else "") if x)
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(str(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_img(png: bytes, alt: str) -> str:
    """An <img> with the PNG inlined as a data URI: the page stays one file."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta { color: #666; font-size: .9rem; }
.banner { background: #fff4ce; border: 1px solid #e0c060; padding: .6rem 1rem; border-radius: 6px;
          margin: 1rem 0; }
.problems { background: #fde7e9; border: 1px solid #e0a0a8; padding: .6rem 1rem; border-radius: 6px; }
.problems li, .banner li { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .82rem; }
.explain { color: #444; font-size: .92rem; max-width: 75em; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .86rem; }
th, td { border: 1px solid #d0d0d0; padding: .28rem .55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.nw { white-space: nowrap; }
td.good { background: #e3f4e3; } td.bad { background: #fbe3e3; } td.warn { background: #fff4ce; }
img { max-width: 100%; border: 1px solid #eee; margin: .4rem 0 1rem; }
nav a { margin-right: 1rem; }
"""

# Runs in the browser after load: marks the page rendered and counts images that failed to decode, so a
# headless check (analysis.browser_check) can tell a good render from a broken one in the dumped DOM.
CHECK_SCRIPT = """
<script>
window.addEventListener("error", function () {
  document.body.dataset.jsErrors = String(Number(document.body.dataset.jsErrors || 0) + 1);
});
window.addEventListener("load", function () {
  var broken = 0, imgs = document.images;
  for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++; }
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.brokenImages = String(broken);
  document.body.dataset.rendered = "yes";
});
</script>
"""


def html_page(title: str, meta: str, body: str) -> str:
    """The whole self-contained report page."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f'<body>\n<h1>{html.escape(title)}</h1>\n<p class="meta">{meta}</p>\n'
        f"{body}\n{CHECK_SCRIPT}</body></html>\n"
    )
