"""The documentation stays true: the architecture page is checked against the code.

Every module it names exists; every call it writes as ``name(param, ...)`` has exactly those
parameters (``inspect.signature``); its frozen-at-test table is each bundled method's
``frozen_at_test``. Docstrings carry no measured figures (they go stale; the README and
``benchmarks/results/`` keep them, dated).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from fsbench.engine.episodic import MetaTrainSpec, meta_train
from fsbench.engine.pretrain import PretrainSpec, ensure_pretrained
from fsbench.hookspecs import fsbench_methods
from fsbench.method import Method, MethodContext, StepOutput
from fsbench.plugins import default_registry
from fsbench.precision import Precision

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"

#: What the page's calls name: a class (its constructor, or ``Class.method``) or a function.
DOCUMENTED = {
    "Method": Method,
    "MethodContext": MethodContext,
    "StepOutput": StepOutput,
    "Precision": Precision,
    "PretrainSpec": PretrainSpec,
    "MetaTrainSpec": MetaTrainSpec,
    "ensure_pretrained": ensure_pretrained,
    "meta_train": meta_train,
    "fsbench_methods": fsbench_methods,
}

#: A code span that reads as a call with plain parameter names: ``Name.attr(a, b)``.
CALL = re.compile(r"`([A-Za-z_][\w.]*)\(((?:\s*\w+\s*,?)*)\)`")


def _text() -> str:
    return PAGE.read_text()


def _documented_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for name, params in CALL.findall(_text()):
        calls.append((name, [p.strip() for p in params.split(",") if p.strip()]))
    return calls


def _resolve(name: str):
    head, *rest = name.split(".")
    if head not in DOCUMENTED:
        return None
    obj = DOCUMENTED[head]
    for attr in rest:
        obj = getattr(obj, attr)
    return obj


def _parameters(obj) -> list[str]:
    params = inspect.signature(obj).parameters
    return [n for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_architecture_page_names_only_existing_modules():
    named = set(re.findall(r"`((?:fsbench|plugins)/[\w/]+\.py)`", _text()))
    assert len(named) >= 25, sorted(named)  # the page walks the whole run
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_call_on_the_page_is_a_known_object():
    unknown = sorted({name for name, _ in _documented_calls() if _resolve(name) is None})
    assert not unknown, (f"docs/architecture.md writes calls to {unknown}: add them to DOCUMENTED in "
                         "tests/test_docs.py so that their signatures are checked")


@pytest.mark.parametrize(("name", "params"), _documented_calls(), ids=lambda v: str(v))
def test_the_page_writes_each_signature_as_the_code_has_it(name, params):
    assert _parameters(_resolve(name)) == params, f"docs/architecture.md: `{name}({', '.join(params)})`"


def test_the_page_documents_the_method_contract():
    """The calls a plugin author needs are all on the page (and so all checked above)."""
    named = {name for name, _ in _documented_calls()}
    contract = {"Method.meta_train_step", "Method.embed", "Method.classify", "Method.adapt_and_predict",
                "Method.fit_base", "Method.outer_step", "MethodContext", "StepOutput"}
    assert contract <= named, sorted(contract - named)


def test_the_frozen_at_test_table_is_each_methods_flag():
    rows = dict(re.findall(r"^\| `(\w+)` \| (frozen|adapts per episode)\b", _text(), flags=re.M))
    bundled = {n: r for n, r in default_registry().methods.items()
               if r.plugin.split(":")[-1].startswith("fsbench_plugins") or r.origin == "fsbench"}
    assert set(rows) == set(bundled), "the table lists every bundled method, and only those"
    wrong = {n: rows[n] for n, r in bundled.items() if (rows[n] == "frozen") != r.cls.frozen_at_test}
    assert not wrong, f"docs/architecture.md says the opposite of frozen_at_test for {wrong}"


def test_readme_links_the_architecture_page():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


#: What a measured figure looks like in prose: a time, a throughput, a paired difference.
MEASURED = re.compile(r"\d\s*(?:CPU-s\b|img/s\b|ep/s\b)|± \d+(?:\.\d+)? points|[Mm]easured on\b")


def _docstrings(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield getattr(node, "name", path.name), doc


def test_docstrings_carry_no_measured_figures():
    found = [f"{p.relative_to(ROOT)}: {name}: {m.group(0)!r}"
             for folder in ("fsbench", "plugins") for p in sorted((ROOT / folder).rglob("*.py"))
             for name, doc in _docstrings(p) for m in [MEASURED.search(doc)] if m]
    assert not found, f"measured figures belong in the README or benchmarks/results/: {found}"


def test_the_measured_pattern_finds_what_it_looks_for():
    assert MEASURED.search("a meta-train step costs 2.66 CPU-s in fp32")
    assert MEASURED.search("lost 2.79 ± 0.62 points")
    assert MEASURED.search("Measured on a 2-core AMD EPYC")
    assert not MEASURED.search("mean ± 95% CI over test episodes")
