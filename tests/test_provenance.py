"""Every preset setting names its source; docs/presets.md is `fsbench methods --presets`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsbench import cli
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord
from fsbench.method import Method
from fsbench.plugins import default_registry
from fsbench.provenance import missing_sources, presets_markdown, provenance, unknown_sources

ROOT = Path(__file__).resolve().parents[1]


def bundled() -> dict[str, MethodRecord]:
    return {n: r for n, r in default_registry().methods.items()
            if r.plugin.split(":")[-1].startswith("fsbench_plugins") or r.origin == "fsbench"}


@pytest.mark.parametrize("name", sorted(bundled()))
def test_every_setting_of_every_bundled_preset_has_a_source(name):
    record = bundled()[name]
    assert "paper" in record.presets
    assert missing_sources(record) == []
    assert unknown_sources(record) == []


def test_docs_presets_md_is_the_commands_output(capsys):
    assert cli.main(["methods", "--presets"]) == 0
    out = capsys.readouterr().out
    assert out == presets_markdown(default_registry().methods)
    docs = (ROOT / "docs" / "presets.md").read_text()
    assert docs == presets_markdown(bundled()), (
        "docs/presets.md is stale: regenerate it with `fsbench methods --presets > docs/presets.md`")


class _Dummy(Method):
    pass


def _record(paper_sources, quick=None, quick_sources=None) -> MethodRecord:
    paper = MethodPreset(backbone="conv4", hparams=None, episodic=EpisodicConfig(iterations=10),
                         sources=paper_sources)
    quick = quick or paper
    quick = MethodPreset(backbone=quick.backbone, hparams=None, episodic=quick.episodic,
                         sources=quick_sources or {})
    return MethodRecord("dummy", _Dummy, "a test method", {"paper": paper, "quick": quick})


def test_rules_paper_needs_all_quick_inherits_equal_values_and_marks_deviations():
    every = {"backbone": "paper Sec. 1", **{f"episodic.{k}": f"code L{i}" for i, k in enumerate(
        ("iterations", "meta_batch", "train_query", "val_every", "val_episodes", "grad_clip",
         "train_way"))}}
    record = _record(every)
    assert missing_sources(record) == []  # quick equals paper: it inherits every source
    assert all(row.inherited for row in provenance(record, "quick") if row.name != "eval_batch")
    shorter = MethodPreset(backbone="conv4", hparams=None, episodic=EpisodicConfig(iterations=5))
    record = _record(every, quick=shorter)
    assert missing_sources(record) == ["quick:episodic.iterations"]
    record = _record(every, quick=shorter,
                     quick_sources={"episodic.iterations": "DEVIATION: CPU budget"})
    assert missing_sources(record) == []
    row = next(r for r in provenance(record, "quick") if r.name == "episodic.iterations")
    assert row.deviation and "**deviation:** CPU budget" in presets_markdown({"dummy": record})
    del every["backbone"]
    assert missing_sources(_record(every)) == ["paper:backbone", "quick:backbone"]
    assert unknown_sources(_record({**every, "hparams.typo": "x"})) == ["paper:hparams.typo"]
