"""`python -m analysis.browser_check REPORT_HTML [--screenshot PNG]`: does the report render in a browser?

Opens the page in headless Chromium, lets its scripts run, dumps the DOM and checks what the page's own
load handler recorded (analysis.render.CHECK_SCRIPT): it rendered, no image failed to decode, no script
error. Optionally saves a screenshot to look at. Exit 0 when the page rendered cleanly, 1 when not,
2 when no Chromium is installed (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


@dataclass
class RenderCheck:
    ok: bool
    images: int
    broken_images: int
    js_errors: int
    message: str


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _attr(dom: str, name: str) -> str | None:
    m = re.search(rf'<body[^>]*\bdata-{name}="([^"]*)"', dom)
    return m.group(1) if m else None


def check_render(html_path: Path, screenshot: Path | None = None, timeout: float = 120.0) -> RenderCheck:
    """Render html_path headless; raise FileNotFoundError when no Chromium is installed."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (tried: " + ", ".join(BROWSERS) + ")")
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="sftsweep-chromium-") as profile:
        base = [browser, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout
        ).stdout
        if screenshot is not None:
            subprocess.run(
                [*base, f"--screenshot={Path(screenshot).resolve()}", "--window-size=1400,2400", url],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
    rendered = _attr(dom, "rendered") == "yes"
    images = int(_attr(dom, "images") or 0)
    broken = int(_attr(dom, "broken-images") or 0)
    js_errors = int(_attr(dom, "js-errors") or 0)
    ok = rendered and broken == 0 and js_errors == 0
    if not dom.strip():
        msg = "Chromium produced no DOM"
    elif not rendered:
        msg = "the page's load handler never ran"
    else:
        msg = f"rendered: {images} images, {broken} broken, {js_errors} script errors"
    return RenderCheck(ok, images, broken, js_errors, msg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.browser_check", description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None, help="also save a PNG screenshot here")
    args = ap.parse_args(argv)
    try:
        res = check_render(args.html, args.screenshot)
    except FileNotFoundError as e:
        print(f"browser_check: {e}", file=sys.stderr)
        return 2
    print(f"{'OK' if res.ok else 'FAILED'}: {args.html}: {res.message}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
