"""Where every preset setting comes from: the value, its source, and deviations marked.

A :class:`~fsbench.config.MethodPreset` carries ``sources``: setting -> citation (the paper's
section, or the reference code's file and line). A setting is named as ``--set`` names it
(``hparams.inner_lr``, ``episodic.iterations``, ``pretrain.epochs``), plus ``backbone``,
``backbone_kwargs.<name>`` and ``eval_batch``. A deliberate deviation starts with
``DEVIATION:`` and says why.

Rules (checked by ``tests/test_provenance.py`` on every bundled method):

* every setting of a ``paper`` preset has a source;
* a ``quick`` or ``smoke`` setting equal to the ``paper`` value inherits the paper's source
  (shown as ``as paper: ...``); a ``quick`` setting that differs needs its own entry (usually a
  deviation);
* a ``smoke`` preset exists for tests: a setting of it that differs from the paper's without an
  entry of its own is a deviation for that reason (:data:`SMOKE_DEVIATION`), so a smoke preset
  names only the deviations that have another reason.

``fsbench methods --presets`` prints :func:`presets_markdown`; ``docs/presets.md`` is that
output, and a test fails when the two differ.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from fsbench.config import MethodPreset
from fsbench.hookspecs import MethodRecord

DEVIATION = "DEVIATION:"

#: Settings that are the runner's, not the method's: no source needed (none is possible).
ENGINE_SETTINGS = frozenset({"eval_batch"})

#: The preset that exists for tests, and the source of each of its unsourced deviations.
SMOKE_PRESET = "smoke"
SMOKE_DEVIATION = f"{DEVIATION} tests (a smoke preset runs in seconds on synthetic data)"


@dataclass(frozen=True)
class Setting:
    """One setting of one preset: its value, its source, and whether it inherited that source."""

    name: str
    value: Any
    source: str  # "" when none is known
    inherited: bool = False  # the source is the paper preset's (same value)
    by_rule: bool = False  # the source is the smoke rule's (SMOKE_DEVIATION)

    @property
    def deviation(self) -> bool:
        return self.source.startswith(DEVIATION)


def settings(preset: MethodPreset) -> dict[str, Any]:
    """Every setting of ``preset`` by its ``--set`` name, in a stable order."""
    out: dict[str, Any] = {"backbone": preset.backbone}
    for name, value in sorted(preset.backbone_kwargs.items()):
        out[f"backbone_kwargs.{name}"] = value
    for section in ("hparams", "episodic", "pretrain"):
        obj = getattr(preset, section)
        if obj is None:
            continue
        for field in dataclasses.fields(obj):
            out[f"{section}.{field.name}"] = getattr(obj, field.name)
    out["eval_batch"] = preset.eval_batch
    return out


def provenance(record: MethodRecord, preset_name: str) -> list[Setting]:
    """The settings of one preset of a method with their sources (see the module rules)."""
    preset = record.presets[preset_name]
    paper = record.presets.get("paper")
    paper_values = settings(paper) if paper is not None else {}
    rows = []
    for name, value in settings(preset).items():
        source, inherited, by_rule = preset.sources.get(name, ""), False, False
        if not source and paper is not None and preset is not paper:
            if name in paper_values and paper_values[name] == value and paper.sources.get(name):
                source, inherited = paper.sources[name], True
            elif preset_name == SMOKE_PRESET and name not in ENGINE_SETTINGS:
                source, by_rule = SMOKE_DEVIATION, True
        rows.append(Setting(name, value, source, inherited, by_rule))
    return rows


def missing_sources(record: MethodRecord) -> list[str]:
    """``preset:setting`` for every setting the rules above leave without a source."""
    missing = []
    for preset_name in record.presets:
        for row in provenance(record, preset_name):
            if not row.source and row.name not in ENGINE_SETTINGS:
                missing.append(f"{preset_name}:{row.name}")
    return missing


def unknown_sources(record: MethodRecord) -> list[str]:
    """Source keys that name no setting of their preset (a typo hides a missing source)."""
    unknown = []
    for preset_name, preset in record.presets.items():
        names = set(settings(preset))
        unknown += [f"{preset_name}:{key}" for key in preset.sources if key not in names]
    return unknown


def _value(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "`" + text.replace("|", "\\|") + "`"


def _source(row: Setting) -> str:
    if not row.source:
        return "runner setting" if row.name in ENGINE_SETTINGS else "**no source**"
    text = row.source.replace("|", "\\|")
    if row.deviation:
        text = "**deviation:** " + text[len(DEVIATION):].strip()
    return ("as paper: " + text) if row.inherited else text


def presets_markdown(records: dict[str, MethodRecord]) -> str:
    """Every method's presets, each setting with its value and source, as markdown."""
    lines = [
        "# Presets and their provenance",
        "",
        "Generated by `fsbench methods --presets` (a test keeps this file equal to its output).",
        "Each setting names its source: the paper's section or the reference code's file and",
        "line. **deviation** marks a deliberate difference and says why; `as paper` marks a",
        "`quick`/`smoke` setting equal to the `paper` preset's, with the paper's source. A `smoke`",
        "preset exists for tests: its other settings without a source of their own are deviations",
        "for that reason.",
        "",
    ]
    for name in sorted(records):
        record = records[name]
        lines += [f"## {name}", "", record.description, ""]
        for preset_name, preset in record.presets.items():
            lines += [f"### {name} / {preset_name}", ""]
            if preset.description:
                lines += [preset.description, ""]
            lines += ["| setting | value | source |", "|---|---|---|"]
            for row in provenance(record, preset_name):
                lines.append(f"| `{row.name}` | {_value(row.value)} | {_source(row)} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
