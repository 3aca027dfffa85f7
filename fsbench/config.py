"""Typed configuration: the run config, training schedules and presets.

A method's record (see :mod:`fsbench.hookspecs`) gives one :class:`MethodPreset` per preset name:
``paper`` (the paper's protocol and hyperparameters), ``quick`` (a whole run on real
miniImageNet in about 15 minutes on 2 CPU cores) and ``smoke`` (under a minute, for tests).
Values a user overrides come from the command line or a ``--config`` file and are checked
against the dataclass field types before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fsbench import strictjson
from fsbench.errors import ConfigError
from fsbench.options import (
    EACH,
    OVERRIDES,
    SINGLE,
    SWITCH,
    TRISTATE,
    check_fields,
    option,
    parse_bool,
    parse_int,
    parse_path,
    parse_str,
)

PRESETS = ("paper", "quick", "smoke", "official_pytorch")  # the last: MTL only
# The same names as fsbench.data.registry.DATASETS (a test keeps them equal).
DATASETS = ("synthetic", "synthetic_easy", "miniimagenet", "tieredimagenet", "fc100", "cifar_fs",
            "cub", "folder")
BUILT_IN = ("synthetic", "synthetic_easy")  # generated, no --data-root
EVAL_SPLITS = ("test", "val")
HT_FILL_RULES = ("confused", "random")
HT_MODES = ("extra", "replace")
PRECISIONS = ("auto", "fp32", "bf16")  # what each means: fsbench.precision


@dataclass(frozen=True)
class PretrainConfig:
    """Many-shot supervised pre-training of the backbone on all train classes."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine", "step" (x0.1 at 50% and 75% of the epochs) or "halve"
    images_per_epoch: int | None = None  # None: the whole train split each epoch
    val_episodes: int = 200  # fixed val episodes for the nearest-centroid probe
    augment: bool = True  # random-resized-crop + horizontal flip, batched on the device
    label_smoothing: float = 0.0
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum, weight decay) or "adam"
    crop: bool = True  # with augment: random-resized crops; False: horizontal flips only
    halve_every: int = 5000  # schedule "halve": the lr halves every this many optimizer steps ...
    lr_min: float = 0.0  # ... down to this floor
    step_every: int = 0  # schedule "step": x step_gamma every this many epochs (0: at 50% and 75%)
    step_gamma: float = 0.1
    head_hidden: int = 0  # the classifier head: 0 a single FC layer, else FC-ReLU-FC of this width
    #: The classifier: "linear" (FC, see head_hidden) or "cosine": Baseline++'s cosine classifier,
    #: logits = cosine_scale * g_c * cos(x, w_c) with a learned gain g_c per class
    #: (:class:`fsbench.learners.cosine.CosineClassifier`).
    head: str = "linear"
    cosine_scale: float = 2.0
    #: Born-again self-distillation (RFS): generation k > 0 is trained from a fresh initialisation
    #: on distill_ce_weight * CE + distill_kl_weight * T^2 * KL(teacher || student) at temperature T,
    #: its teacher being generation k - 1 (the same settings, one generation fewer). 0: none.
    distill_generations: int = 0
    distill_ce_weight: float = 0.5
    distill_kl_weight: float = 0.5
    distill_temperature: float = 4.0


@dataclass(frozen=True)
class EpisodicConfig:
    """The core's meta-training loop: ``iterations`` meta-batches of ``meta_batch`` tasks."""

    iterations: int = 10_000
    meta_batch: int = 4
    train_query: int = 15  # queries per class in training tasks
    train_way: int | None = None  # classes per training task; None: the run's --way
    val_every: int = 500
    val_episodes: int = 600
    grad_clip: float | None = None


@dataclass(frozen=True)
class HardTaskConfig:
    """The hard-task (HT) meta-batch of MTL (Sun et al., CVPR 2019, Algorithm 1).

    The failure class of each task (the class with the lowest query accuracy) is recorded; after
    every ``every`` regular meta-batches, ``count`` hard tasks are composed from the classes
    recorded since the last hard batch with freshly drawn images and trained on as a hard
    meta-batch (``mode``: in addition, or in the place of the next regular one), and the failure
    set is emptied. When there are fewer distinct failure classes than ``way``,
    ``fill`` completes each hard task: ``confused`` adds the classes the failure classes were
    most often mistaken for (then random ones), ``random`` adds random train classes.
    """

    enabled: bool = False
    every: int = 1
    count: int | None = None  # None: as many hard tasks as the meta-batch has tasks
    fill: str = "confused"
    #: ``extra``: the hard meta-batch is trained in addition to the regular ones (Algorithm 1);
    #: it does not advance the learning-rate schedule, which counts meta-iterations.
    #: ``replace``: compute-matched, the hard meta-batch takes the place of the next regular one,
    #: so MTL+HT and MTL make the same number of outer updates.
    mode: str = "extra"


@dataclass(frozen=True)
class MethodPreset:
    """Everything a preset fixes for one method: backbone, schedules, method hyperparameters."""

    backbone: str
    hparams: Any  # the method's own frozen dataclass
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    episodic: EpisodicConfig | None = None  # None: the method does no episodic training
    pretrain: PretrainConfig | None = None  # None: the method needs no pre-trained backbone
    eval_batch: int = 50  # test episodes processed together
    description: str = ""
    #: Provenance: setting -> its source. Keys name a setting as ``--set`` does
    #: (``hparams.inner_lr``, ``episodic.iterations``, ``pretrain.epochs``) or ``backbone``; the
    #: value cites the paper section or the reference code's file and line. A deliberate
    #: deviation starts with ``DEVIATION:`` and says why.
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def parse_device(value: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    name = parse_str(value)
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {name!r}")


# The --help groups of `fsbench run` and `fsbench pretrain` (options without one come first).
DATA = "data"
EPISODES = "episodes"
HARD_TASKS = "hard-task meta-batch (any episodic method)"
FILES = "files"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One `fsbench run`: which method on which data, and how it is evaluated.

    Each field is one option, declared here once (:func:`fsbench.options.option`): its flag is
    ``--`` and the name with dashes; help, parser, choices, least value, help group and role in
    ``fsbench sweep`` sit beside the default. The flags of ``fsbench run`` and ``fsbench
    pretrain``, the sweep's axes and :meth:`validate` are derived from them. The order of the
    fields is the order in which a sweep's product varies them (the last fastest).
    """

    dataset: str = option("synthetic", choices=DATASETS, group=DATA,
                          help="dataset (synthetic and synthetic_easy are built in; the others "
                               "need --data-root)")
    data_root: Path | None = option(None, parse=parse_path, group=DATA, metavar="PATH", in_key=False,
                                    help="the dataset's archive or folder (see `fsbench datasets`); "
                                         "prepared into the cache on first use")
    eval_split: str = option("test", choices=EVAL_SPLITS, group=DATA,
                             help="split the test episodes come from (use val while developing)")
    eval_dataset: str | None = option(None, choices=DATASETS, group=DATA,
                                      help="cross-domain: draw the test episodes from this dataset's "
                                           "--eval-split (e.g. train on miniimagenet, test on cub); "
                                           "default: --dataset")
    eval_data_root: Path | None = option(None, parse=parse_path, group=DATA, metavar="PATH",
                                         in_key=False, help="the --eval-dataset's archive or folder")
    preset: str | None = option(None, choices=PRESETS,
                                help="paper (the paper's protocol), quick (~15 CPU minutes on "
                                     "miniImageNet) or smoke (under a minute); default: paper on "
                                     "real data, quick on synthetic")
    backbone: str | None = option(None, help="backbone: conv4, conv4_32, resnet12, resnet12_mtl, "
                                             "resnet12_tiny or any timm model (default: the preset's)")
    way: int = option(5, parse=parse_int, least=1, group=EPISODES, help="classes per episode")
    shot: int = option(1, parse=parse_int, least=1, group=EPISODES, help="support images per class")
    query: int = option(15, parse=parse_int, least=1, group=EPISODES, help="query images per class")
    episodes: int = option(600, parse=parse_int, least=2, why="a confidence interval needs two",
                           group=EPISODES, help="test episodes")
    method: str = option(help="method name (see `fsbench methods`)")
    hard_tasks: bool | None = option(None, parse=parse_bool, kind=TRISTATE, group=HARD_TASKS,
                                     help="train on hard-task meta-batches (default: on for *_ht "
                                          "methods; in a sweep: on, off or default)")
    ht_every: int | None = option(None, parse=parse_int, least=1, group=HARD_TASKS,
                                  help="a hard meta-batch after every N regular ones (hard ones are "
                                       "not counted; default 1)")
    ht_count: int | None = option(None, parse=parse_int, least=1, group=HARD_TASKS,
                                  help="hard tasks per hard meta-batch (default: the meta-batch size)")
    ht_fill: str | None = option(None, choices=HT_FILL_RULES, group=HARD_TASKS,
                                 help="how to complete a hard task with fewer failure classes than "
                                      "--way (default confused)")
    ht_mode: str | None = option(None, choices=HT_MODES, group=HARD_TASKS,
                                 help="extra: each hard meta-batch is trained in addition, right "
                                      "after the N-th regular one, and the lr schedule counts "
                                      "regular meta-iterations only (the paper); replace: "
                                      "compute-matched, it takes the place of the next regular "
                                      "one, so each cycle is N regular + 1 hard (default extra)")
    device: str = option("auto", parse=parse_device, in_key=False, help="auto, cpu, cuda or cuda:N")
    #: From --config (a file; in a sweep, one run per file) and --set (fsbench.config.parse_set).
    overrides: dict[str, Any] = option(default_factory=dict, parse=parse_path, kind=OVERRIDES,
                                       flag="--config", group=FILES, metavar="FILE",
                                       help="TOML/JSON file of overrides: [hparams], [episodic], "
                                            "[pretrain] tables")
    seed: int = option(0, parse=parse_int, least=0, kind=EACH, metavar="SEED[,SEED...]",
                       help="training seed(s): initialisation, training tasks, pre-training; "
                            "several (--seed 0,1,2 or repeated) make one run each, on the same "
                            "test episodes")
    episode_seed: int = option(0, parse=parse_int, least=0, group=EPISODES,
                               help="seed of the test and validation episodes, shared by every "
                                    "training seed and method so results pair up")
    precision: str = option("auto", choices=PRECISIONS, in_key=False,  # the key: the resolved one
                            help="auto (bf16 autocast + channels_last on CUDA and on CPUs with "
                                 "native bf16, else fp32), fp32 or bf16")
    output: Path = option(Path("results"), parse=parse_path, sweep=SINGLE, group=FILES,
                          metavar="DIR", in_key=False, help="output root")
    resume: bool = option(False, kind=SWITCH, sweep="", group=FILES, in_key=False,
                          help="resume an interrupted run (re-running the same command does too); "
                               "show a finished one")
    cache_dir: Path | None = option(None, parse=parse_path, sweep=SINGLE, group=FILES,
                                    metavar="DIR", in_key=False, help="decoded datasets and pre-trained backbones "
                                                        "(default $FSBENCH_CACHE or ~/.cache/fsbench)")

    def resolved_preset(self) -> str:
        if self.preset is not None:
            return self.preset
        return "quick" if self.dataset in BUILT_IN else "paper"

    def validate(self) -> None:
        """Each option's own check (:func:`fsbench.options.check_fields`), then the relations."""
        check_fields(self)
        if self.dataset not in BUILT_IN and self.data_root is None:
            raise ConfigError(f"--data-root is required for dataset {self.dataset!r}")
        if self.eval_dataset is None and self.eval_data_root is not None:
            raise ConfigError("--eval-data-root needs --eval-dataset")
        if self.eval_dataset not in (None, *BUILT_IN) and self.eval_data_root is None:
            raise ConfigError(f"--eval-data-root is required for --eval-dataset {self.eval_dataset!r}")


# ---------------------------------------------------------------------------------------------
# Overrides: `--set section.field=value` and `--config file.{toml,json}`, checked against types.

OVERRIDE_SECTIONS = ("hparams", "episodic", "pretrain")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON file of overrides: ``{"hparams": {...}, "episodic": {...}, ...}``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:  # strictly: no NaN/Infinity, 64-bit integers, bounded nesting (fsbench.strictjson)
        data = (strictjson.loads(text, f"config file {path}") if path.suffix == ".json"
                else strictjson.check_parsed(tomllib.loads(text), f"config file {path}"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid toml: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of sections")
    return data


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["hparams.lr=0.01", "episodic.iterations=200"]`` -> nested dict (values parsed as JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set expects section.field=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def run_overrides(config_file: Path | None, sets: list[str]) -> dict[str, Any]:
    """The overrides of ``--config FILE`` (if given) with ``--set`` items applied on top."""
    overrides: dict[str, Any] = {}
    if config_file is not None:
        overrides.update(load_config_file(config_file))
    for section, values in parse_set(sets).items():
        overrides.setdefault(section, {}).update(values)
    return overrides


def _check_type(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def apply_overrides(obj: Any, values: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``obj`` with ``values`` applied, each checked against its field type."""
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"{where} has no settings to override")
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown setting {where}.{name}; valid: {', '.join(sorted(known))}")
        if not _check_type(value, hints[name]):
            raise ConfigError(
                f"{where}.{name} must be {_type_name(hints[name])}, got {value!r} ({type(value).__name__})"
            )
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            values = {**values, name: tuple(value)}
    if isinstance(obj, HardTaskConfig) and values.get("fill", obj.fill) not in HT_FILL_RULES:
        raise ConfigError(f"{where}.fill must be one of {', '.join(HT_FILL_RULES)}")
    if isinstance(obj, HardTaskConfig) and values.get("mode", obj.mode) not in HT_MODES:
        raise ConfigError(f"{where}.mode must be one of {', '.join(HT_MODES)}")
    return replace(obj, **values)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def resolve_preset(preset: MethodPreset, overrides: dict[str, Any]) -> MethodPreset:
    """Apply ``{"hparams": {...}, "episodic": {...}, "pretrain": {...}}`` to a preset."""
    unknown = set(overrides) - set(OVERRIDE_SECTIONS)
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(sorted(unknown))}; valid: {', '.join(OVERRIDE_SECTIONS)}"
        )
    changes: dict[str, Any] = {}
    for section in OVERRIDE_SECTIONS:
        values = overrides.get(section)
        if not values:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a table of settings")
        current = getattr(preset, section)
        if current is None:
            raise ConfigError(f"this method has no {section} settings to override")
        changes[section] = apply_overrides(current, values, section)
    return replace(preset, **changes)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
