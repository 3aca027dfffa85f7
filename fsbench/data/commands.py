"""What ``fsbench datasets`` and ``fsbench data prepare`` do (the CLI only parses and calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from . import registry
from .cache import list_entries
from .prepare import prepare_entry


def datasets_dir(cache_dir: Path) -> Path:
    """Where runs keep prepared datasets: ``<cache dir>/datasets``."""
    return Path(cache_dir).expanduser() / "datasets"


def _status(entries: list[tuple[str, dict[str, Any], bool]], name: str) -> str:
    lines = []
    for _, data, complete in entries:
        if complete and data.get("dataset") == name:
            sizes = "/".join(str(len(c)) for c in data.get("classes", {}).values())
            lines.append(f"yes, {sizes} classes, {data.get('image_size')}px:\n{data.get('source')}")
        elif not complete and data.get("header", {}).get("dataset") == name:
            header = data["header"]
            total = sum(len(c) for c in header.get("splits", {}).values())
            lines.append(f"partial, {len(data.get('done', {}))}/{total} classes (re-run to "
                         f"resume):\n{header.get('source')}")
    return "\n".join(lines) or ("built in" if registry.DATASETS[name].source is None else "no")


def datasets_table(cache_dir: Path) -> Table:
    """Every dataset: what to download and from where, its splits, and whether it is prepared."""
    entries = list_entries(datasets_dir(cache_dir))
    table = Table(title=f"fsbench datasets (prepared under {datasets_dir(cache_dir)})")
    table.add_column("dataset", no_wrap=True)
    table.add_column("classes\ntrain/val/test", no_wrap=True)
    table.add_column("image", no_wrap=True)
    table.add_column("needs (where from)", overflow="fold")
    table.add_column("prepared", overflow="fold")
    for name, d in registry.DATASETS.items():
        needs = d.archive if d.source is None else f"{d.archive}\n[dim]{d.where}[/]"
        table.add_row(name, d.classes, d.image_size, needs, _status(entries, name))
    return table


def prepare_dataset(name: str, source_path: Path, cache_dir: Path, *, image_size: int | None = None,
                    progress: bool = True) -> list[str]:
    """Prepare dataset ``name`` from ``source_path`` under ``cache_dir``; lines that report it."""
    source = registry.source(name, Path(source_path), image_size=image_size)
    entry, built = prepare_entry(source, datasets_dir(cache_dir), progress)
    meta = entry.meta
    sizes = ", ".join(f"{s} {len(meta['classes'][s])} classes / {shape[0]:,} images"
                      for s, shape in meta["shapes"].items())
    when = (f"prepared in {meta['seconds']:.0f} s" if built
            else f"already prepared ({meta['prepared']})")
    return [f"{name}: {when} from {meta['source']} ({meta['kind']}): {sizes}, "
            f"{meta['image_size']}x{meta['image_size']}",
            f"cache entry: {entry.path} (sha256 of {len(meta['checksums'])} source file(s) and "
            "archive(s) in its meta.json)",
            *(f"note: {n}" for n in meta["notes"][1:])]
