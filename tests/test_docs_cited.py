"""Documents the code cites ship with it: every ``docs/NAME`` named in a source file exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_cited_document_is_in_the_repository():
    cited: dict[str, set[str]] = {}
    sources = [*ROOT.glob("flowprof/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py")]
    for path in [*sources, ROOT / "Makefile", ROOT / "README.md"]:
        for doc in re.findall(r"\bdocs/[\w.-]+\.(?:md|svg|png)", path.read_text()):
            cited.setdefault(doc, set()).add(str(path.relative_to(ROOT)))
    assert "docs/design.md" in cited and "docs/assignment.md" in cited
    missing = {doc: sorted(where) for doc, where in cited.items() if not (ROOT / doc).exists()}
    assert missing == {}


def test_no_source_cites_a_document_outside_the_repository():
    # DESIGN.md and ASSIGNMENT.md lived beside the repository, not in it: cite docs/ instead.
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*ROOT.glob("flowprof/**/*.py"), *ROOT.glob("tests/*.py")]
        if p.name != "test_docs_cited.py"
        and re.search(r"(?<![/\w])(DESIGN|ASSIGNMENT|STYLE)\.md", p.read_text())
    ]
    assert offenders == []
