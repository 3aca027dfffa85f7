"""The README's Reliability table stays true: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Reliability")
    return text[start:text.index("\n## ", start + 1)]


def test_every_row_names_tests_that_exist():
    rows = [line for line in _section().splitlines()
            if line.startswith("| ") and not line.startswith(("| fault", "|---"))]
    assert len(rows) >= 40, len(rows)
    defined: dict[str, set[str]] = {}
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == 3, row
        refs = re.findall(r"`((?:tests/[\w/]+\.py)?::\w+)`", cells[2])
        assert refs, f"a row names no test: {row}"
        current = None
        for ref in refs:
            path, name = ref.split("::")
            current = path or current  # `::name` continues the file named before it
            if current not in defined:
                tree = ast.parse((ROOT / current).read_text())
                defined[current] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in defined[current], f"{current}::{name} does not exist"
