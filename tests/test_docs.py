"""The documentation stays true: every module the architecture page names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_page_names_only_existing_modules():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:fsbench|plugins)/[\w/]+\.py)`", text))
    assert len(named) >= 25, sorted(named)  # the page walks the whole run
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_readme_links_the_architecture_page():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
