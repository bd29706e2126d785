"""Regenerate the HTML view's screenshots in docs/ (headless Chromium; run from the repository
root): ``python docs/screenshots.py``. Each page is opened and worked through its own controls,
as a person would, then photographed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flowprof  # noqa: E402
from flowprof.reports.view import view_html  # noqa: E402
from tests.chromium import run_page  # noqa: E402

# model, its options, modules to open, then a block to find with the search box (centred and
# selected) or to click (after fitting the graph to the window), the file
SCENES = [
    ("torchvision:resnet50", {}, ["layer2"], "find", "layer2.0.conv2", "view-resnet50.png"),
    (
        "transformer",
        {"enc_layers": 6, "dec_layers": 6},
        ["encoder", "decoder"],
        "click",
        "decoder.layers.0-5",
        "view-transformer.png",
    ),
]


def main() -> None:
    for model, options, opened, how, selected, name in SCENES:
        graph = flowprof.trace(model, **options)
        clicks = "".join(f'fp.click(fp.node("{key}").querySelector(".toggle"));' for key in opened)
        if how == "find":
            box = 'document.getElementById("search")'
            then = f'fp.type({box}, "{selected}"); fp.key({box}, "Enter"); fp.type({box}, "");'
        else:
            then = f'fp.click(document.getElementById("fit")); fp.click(fp.node("{selected}"));'
        driver = f"{clicks} {then} return {{shown: fp.shown()}};"
        title = model if not options else f"{model} (6+6 layers)"
        result, _ = run_page(view_html(graph, title), driver, ROOT / "docs" / name, (1500, 950))
        assert not result["problems"], result["problems"]
        print(f"docs/{name}: {len(result['shown'])} blocks shown")


if __name__ == "__main__":
    main()
