"""A sweep's grid: lists of `fsbench run` options -> the runs of their cartesian product.

From the command line every ``fsbench run`` option takes a comma-separated list
(``--method mtl,mtl_ht --shot 1,5 --seed 0,1,2``). From a TOML file::

    output = "results/ablation"        # top level: settings of every grid (scalars or lists)
    episodes = 600
    seed = [0, 1, 2]

    [[grid]]                           # each [[grid]] is one cartesian product; the sweep is
    dataset = "miniimagenet"           # the union of them (a run listed twice runs once)
    data_root = "/data/miniimagenet"
    method = ["scratch", "finetune", "mtl", "mtl_ht"]
    shot = [1, 5]

    [grid.pretrain]                    # [hparams] / [episodic] / [pretrain] tables: overrides,
    epochs = 50                        # as in `fsbench run --config` (applied, not swept)

Options given on the command line replace the file's value in every grid. Settings that are not
swept (``output``, ``cache_dir``) are single values. A grid is checked before any job starts:
an unknown key or method, an empty list or a value of the wrong type is a one-line error naming
the key (the planner then checks each run against its dataset, e.g. a shot too large).
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsbench.config import OVERRIDE_SECTIONS, RunConfig, load_config_file
from fsbench.errors import ConfigError
from fsbench.options import AXIS, SINGLE, Declared, Option, options_of
from fsbench.strictjson import check_parsed

__all__ = ["AXES", "SINGLE_OPTIONS", "SINGLE_SETTINGS", "Axis", "expand", "grid_configs",
           "load_grid_file", "parse_list"]


@dataclass(frozen=True)
class Axis:
    """One sweepable run option, as :class:`~fsbench.config.RunConfig` declares it.

    ``field`` is its key in a grid file and a product's point: the RunConfig field's name, except
    for the overrides, whose axis is ``config`` (a file of overrides per run, as ``--config``).
    """

    field: str
    option: Option

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def help(self) -> str:
        return self.option.help

    def parse(self, value: Any) -> Any:
        """A value from the command line or a grid file, parsed and checked (ValueError)."""
        return self.option.convert(value)


def _key(d: Declared) -> str:
    return d.flag.removeprefix("--").replace("-", "_")


#: The options a sweep takes as lists, in RunConfig's field order: the order the product varies
#: them (last fastest).
AXES: tuple[Axis, ...] = tuple(Axis(_key(d), d.option) for d in options_of(RunConfig)
                               if d.option.sweep == AXIS)
_BY_FIELD = {a.field: a for a in AXES}

#: A directory axis and the dataset axis its values pair with (in order), and that dataset's default.
PAIRED: dict[str, tuple[str, str | None]] = {"data_root": ("dataset", "synthetic"),
                                             "eval_data_root": ("eval_dataset", None)}

#: Settings of the whole sweep (one value, not a list): where results and caches go.
SINGLE_OPTIONS: tuple[Declared, ...] = tuple(d for d in options_of(RunConfig) if d.option.sweep == SINGLE)
SINGLE_SETTINGS: dict[str, Callable[[Any], Any]] = {d.name: d.option.convert for d in SINGLE_OPTIONS}


def parse_list(key: str, raw: Any, axis: Axis) -> list[Any]:
    """``"1,5"`` or ``[1, 5]`` or ``1`` -> ``[1, 5]`` / ``[1]``, each value parsed and checked."""
    where = key  # the flag (--shot) or the file's key (grid[0].shot)
    if isinstance(raw, str):
        items: list[Any] = [t.strip() for t in raw.split(",")]
        if items == [""]:
            items = []
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        items = [raw]
    if not items:
        raise ConfigError(f"grid: {where} is an empty list; give at least one value")
    out = []
    for item in items:
        try:
            out.append(axis.parse(item))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"grid: {where} value {item!r} is invalid ({exc})") from None
    seen: list[Any] = []
    for value in out:  # keep the order, drop repeats
        if value not in seen:
            seen.append(value)
    return seen


def _normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def _split_table(table: dict[str, Any], where: str) -> tuple[dict[str, list[Any]], dict[str, Any], dict[str, Any]]:
    """A TOML table -> (axes, single settings, override sections)."""
    axes: dict[str, list[Any]] = {}
    single: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = _normalise_key(raw_key)
        if key == "grid":
            continue
        if key in OVERRIDE_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"grid file: [{where}{key}] must be a table of settings")
            overrides[key] = dict(value)
        elif key in _BY_FIELD:
            axes[key] = parse_list(f"{where}{key}", value, _BY_FIELD[key])
        elif key in SINGLE_SETTINGS:
            if isinstance(value, list):
                raise ConfigError(f"grid file: {where}{key} is one value for the whole sweep, not a list")
            try:
                single[key] = SINGLE_SETTINGS[key](value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"grid file: {where}{key} = {value!r} is invalid ({exc})") from None
        else:
            valid = sorted([a.field for a in AXES] + list(SINGLE_SETTINGS) + list(OVERRIDE_SECTIONS) + ["grid"])
            raise ConfigError(f"grid file: unknown key {where}{raw_key!r}; valid: {', '.join(valid)}")
    return axes, single, overrides


@dataclass
class GridSpec:
    """A parsed grid: the products to expand, settings of the sweep, overrides of every run."""

    products: list[tuple[dict[str, list[Any]], dict[str, Any]]]  # (axes, overrides) per [[grid]]
    single: dict[str, Any]


def load_grid_file(path: Path) -> GridSpec:
    """Read a grid TOML file (see the module docstring)."""
    try:
        data = check_parsed(tomllib.loads(Path(path).read_text()), f"grid file {path}")
    except OSError as exc:
        raise ConfigError(f"cannot read grid file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"grid file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"grid file {path} is nested too deeply") from None
    top_axes, single, top_over = _split_table(data, "")
    grids = data.get("grid", [{}])
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"grid file {path}: [[grid]] must be one or more tables")
    products = []
    for i, table in enumerate(grids):
        if not isinstance(table, dict):
            raise ConfigError(f"grid file {path}: grid entry {i + 1} is not a table")
        axes, inner_single, over = _split_table(table, f"grid[{i}].")
        if inner_single:
            raise ConfigError(
                f"grid file {path}: {', '.join(inner_single)} must be set at the top level "
                "(one value for the whole sweep)"
            )
        merged_over = {s: {**top_over.get(s, {}), **over.get(s, {})} for s in {*top_over, *over}}
        products.append(({**top_axes, **axes}, merged_over))
    return GridSpec(products, single)


def grid_configs(
    spec: GridSpec,
    cli_axes: dict[str, list[Any]] | None = None,
    cli_overrides: dict[str, dict[str, Any]] | None = None,
    output: Path | None = None,
    cache_dir: Path | None = None,
) -> list[RunConfig]:
    """Expand a grid: command-line lists replace the file's in every product. Several
    ``--data-root`` values without ``--dataset`` pair with the grid's datasets in the order they
    first appear in it (a grid of miniImageNet and FC100 tables takes ``--data-root MINI,CIFAR``)."""
    cli_axes = dict(cli_axes or {})
    if len(cli_axes.get("data_root", ())) > 1 and "dataset" not in cli_axes:
        roots = _roots_by_dataset(spec, cli_axes.pop("data_root"))
        products = [({**axes, **cli_axes, "data_root": [roots[d] for d in axes.get("dataset", ["synthetic"])]}, over)
                    for axes, over in spec.products]
    else:
        products = [({**axes, **cli_axes}, over) for axes, over in spec.products]
    out_dir = output or spec.single.get("output") or Path("results")
    cache = cache_dir or spec.single.get("cache_dir")
    return expand(products, cli_overrides or {}, out_dir, cache)


def _roots_by_dataset(spec: GridSpec, roots: list[Any]) -> dict[str, Any]:
    """Each dataset of the grid (in order of first appearance) with its ``--data-root`` value."""
    datasets = list(dict.fromkeys(d for axes, _ in spec.products for d in axes.get("dataset", ["synthetic"])))
    if len(roots) != len(datasets):
        raise ConfigError(f"grid: {len(roots)} data roots for the grid's {len(datasets)} dataset(s) "
                          f"({', '.join(datasets)}); give one per dataset, in this order, or one for all")
    return dict(zip(datasets, roots, strict=True))


def _merge_overrides(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a table of settings")
            out.setdefault(section, {}).update(values)
    return out


def expand(
    products: Iterable[tuple[dict[str, list[Any]], dict[str, Any]]],
    cli_overrides: dict[str, Any],
    output: Path,
    cache_dir: Path | None,
) -> list[RunConfig]:
    """The runs of every product, in order, without repeats."""
    configs: list[RunConfig] = []
    seen: set[RunConfig | str] = set()
    file_cache: dict[Path, dict[str, Any]] = {}
    for axes, overrides in products:
        if "method" not in axes:
            raise ConfigError("grid: no method given; use --method a,b or method = [...] in the grid file")
        for root, (data, _) in PAIRED.items():
            if root in axes and data in axes and len(axes[root]) > 1 and len(axes[root]) != len(axes[data]):
                r, d = root.replace("_", " "), data.replace("_", " ")  # "data root", "dataset"
                raise ConfigError(
                    f"grid: {len(axes[root])} {r}s for {len(axes[data])} {d}s; "
                    f"give one {r} per {d} (paired in order) or one for all"
                )
        fields = [a.field for a in AXES if a.field in axes and a.field not in PAIRED]
        for values in itertools.product(*(axes[f] for f in fields)):
            point = dict(zip(fields, values, strict=True))
            for root, (data, default) in PAIRED.items():
                if axes.get(root):
                    roots, datasets = axes[root], axes.get(data, [default])
                    point[root] = roots[datasets.index(point.get(data, default))] \
                        if len(roots) > 1 else roots[0]
            config_file = point.pop("config", None)
            layers = [overrides]
            if config_file is not None:
                if config_file not in file_cache:
                    file_cache[config_file] = load_config_file(config_file)
                layers.append(file_cache[config_file])
            layers.append(cli_overrides)
            cfg = RunConfig(**point, output=output, cache_dir=cache_dir,
                            overrides=_merge_overrides(*layers))
            ident = repr(cfg)
            if ident in seen:
                continue
            seen.add(ident)
            configs.append(cfg)
    if not configs:
        raise ConfigError("grid: it expands to no runs")
    return configs
