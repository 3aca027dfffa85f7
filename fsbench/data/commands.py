"""``fsbench datasets`` and ``fsbench data prepare``: their arguments and what they do.

``fsbench.cli`` adds these parsers (:func:`add_data_parsers`), as it adds the sweep's; building
them imports nothing heavy (the dataset names come from :mod:`fsbench.config`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsbench.config import BUILT_IN, DATASETS

if TYPE_CHECKING:
    from rich.table import Table

CACHE_HELP = "cache root; datasets go to DIR/datasets (default $FSBENCH_CACHE or ~/.cache/fsbench)"


def datasets_dir(cache_dir: Path) -> Path:
    """Where runs keep prepared datasets: ``<cache dir>/datasets``."""
    return Path(cache_dir).expanduser() / "datasets"


def _status(entries: list[tuple[str, dict[str, Any], bool]], name: str) -> str:
    from . import registry

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
    from rich.table import Table

    from . import registry
    from .cache import list_entries

    entries = list_entries(datasets_dir(cache_dir))
    table = Table(title=f"fsbench datasets (prepared under {datasets_dir(cache_dir)})")
    table.add_column("dataset", max_width=34)
    table.add_column("classes\ntrain/val/test", no_wrap=True)
    table.add_column("image", no_wrap=True)
    table.add_column("needs (where from)", overflow="fold")
    table.add_column("prepared", overflow="fold")
    for name, d in registry.DATASETS.items():
        needs = d.archive if d.source is None else f"{d.archive}\n[dim]{d.where}[/]"
        table.add_row(f"[bold]{name}[/]\n[dim]{d.description}[/]", d.classes, d.image_size, needs,
                      _status(entries, name))
    return table


def prepare_dataset(name: str, source_path: Path, cache_dir: Path, *, image_size: int | None = None,
                    progress: bool = True) -> list[str]:
    """Prepare dataset ``name`` from ``source_path`` under ``cache_dir``; lines that report it."""
    from . import registry
    from .prepare import prepare_entry

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


def add_data_parsers(subparsers: Any, positive: Callable[[str], int]) -> None:
    """The ``datasets`` and ``data prepare`` commands (``positive`` parses a positive integer)."""
    p_list = subparsers.add_parser(
        "datasets", help="list the datasets: what to download, splits, whether prepared")
    p_list.add_argument("--cache-dir", type=Path, help=CACHE_HELP)
    p_list.set_defaults(func=cmd_datasets)
    p_data = subparsers.add_parser("data", help="dataset preparation")
    data_sub = p_data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p_prep = data_sub.add_parser(
        "prepare", help="decode a dataset once from its archive into the cache (resumable)",
        description="Decode dataset NAME from --source (an archive or folder) into the memory-mapped "
                    "cache, class by class; re-running resumes an interrupted preparation.")
    p_prep.add_argument("name", metavar="NAME", help="dataset (see `fsbench datasets`)",
                        choices=[n for n in DATASETS if n not in BUILT_IN])
    p_prep.add_argument("--source", type=Path, required=True, help="the archive or folder to read")
    p_prep.add_argument("--cache-dir", type=Path, help=CACHE_HELP)
    p_prep.add_argument("--image-size", type=positive,
                        help="image side in pixels (folder dataset; default 84)")
    p_prep.add_argument("--quiet", action="store_true", help="no progress bar")
    p_prep.set_defaults(func=cmd_data_prepare)


def cmd_datasets(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .cache import default_cache_dir

    Console(width=None if sys.stdout.isatty() else 200).print(
        datasets_table(args.cache_dir or default_cache_dir()))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from .cache import default_cache_dir

    for line in prepare_dataset(args.name, args.source, args.cache_dir or default_cache_dir(),
                                image_size=args.image_size, progress=not args.quiet):
        print(line)
    return 0
