"""Headless Chromium for the browser tests: load a page with a driver script, read back what it
found (and a screenshot). Tests that use it carry the ``browser`` marker and skip without it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Injected first in <head>: collects console errors and warnings and uncaught errors.
PROBE = """<script>
window.__problems = [];
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { window.__problems.push(level + ": " + args.join(" "));
                                  original.apply(console, args); };
}
addEventListener("error", (e) => window.__problems.push(
  "error: " + (e.message || (e.target && (e.target.src || e.target.href)) || e.type)), true);
</script>"""

# Helpers for drivers: real DOM events on the page's own elements.
HELPERS = """
const fp = {
  click(el) { el.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true})); },
  dblclick(el) { el.dispatchEvent(new MouseEvent("dblclick", {bubbles: true})); },
  type(el, text) {
    el.focus(); el.value = text; el.dispatchEvent(new Event("input", {bubbles: true}));
  },
  key(el, key) { el.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true})); },
  node(key) { return document.querySelector(`#viewport .node[data-key="${CSS.escape(key)}"]`); },
  cluster(key) {
    return document.querySelector(`#viewport .cluster[data-key="${CSS.escape(key)}"]`);
  },
  keys(selector) { return [...document.querySelectorAll(selector)].map((n) => n.dataset.key); },
  shown() { return fp.keys("#viewport .node"); },
  clusters() { return fp.keys("#viewport .cluster"); },
  edges() { return [...document.querySelectorAll("#viewport .edge")].map(
    (e) => [e.dataset.src, e.dataset.dst, Number(e.dataset.bits)]); },
  numbers() { return Object.fromEntries([...document.querySelectorAll("#numbers tr[data-key]")].map(
    (r) => [r.dataset.key, Number(r.dataset.value)])); },
  detailName() { const h = document.getElementById("detail-name"); return h && h.textContent; },
};
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is missing (apt-get update && apt-get install -y chromium)",
)


def run_page(
    html: str,
    driver: str = "return {};",
    screenshot: Path | None = None,
    window: tuple[int, int] = (1400, 900),
    timeout: float = 120,
) -> tuple[dict, list[str]]:
    """Load ``html`` in headless Chromium; ``driver`` (the body of an async JavaScript function,
    run after the page's own scripts, with ``fp`` helpers) returns what to check. Returns its
    result plus ``problems`` (console errors and warnings, uncaught errors), and the console
    lines Chromium logged. With ``screenshot``, a PNG of the page after the driver ran is
    written there."""
    script = (
        "<script>" + HELPERS + "(async () => {" + driver + "})()"
        ".catch((e) => ({driver_error: String(e && e.stack || e)}))"
        ".then((r) => { r.problems = window.__problems;"
        " document.body.dataset.result = JSON.stringify(r); });</script>"
    )
    page_html = html.replace("<head>", "<head>" + PROBE, 1).replace("</body>", script + "</body>")
    with tempfile.TemporaryDirectory(prefix="flowprof-chromium-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(page_html, encoding="utf-8")
        args = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={window[0]},{window[1]}",
            "--virtual-time-budget=3000",
        ]
        dumped = subprocess.run(
            [*args, "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        if screenshot is not None:
            shot = Path(tmp) / "shot.png"
            subprocess.run(
                [*args, f"--screenshot={shot}", page.as_uri()],
                capture_output=True,
                timeout=timeout,
                check=True,
            )
            shutil.copyfile(shot, screenshot)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    match = re.search(r'<body[^>]* data-result="([^"]*)"', dumped.stdout)
    assert match, "the driver did not finish: " + dumped.stderr[-2000:]
    text = match[1].replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    result = json.loads(text.replace("&amp;", "&"))
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    return result, console
