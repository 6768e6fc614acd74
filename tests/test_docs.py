"""The documentation holds no developer's machine paths (a worktree, a CI scratch folder) in its
examples: readers copy them (issue 25 item 13)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folders of this project's own machines: /work/... worktrees and checkouts, /tmp/ci scratch.
MACHINE_PATH = re.compile(r"/work/|/tmp/ci\b|/wt-[a-z]")


def test_docs_hold_no_machine_paths():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pages += sorted((REPO / "notebooks").glob("*.md"))
    found = [
        f"{page.relative_to(REPO)}:{n}: {line.strip()[:100]}"
        for page in pages
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert len(pages) > 5 and found == []
