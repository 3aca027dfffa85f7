"""`fsbench run`: resolve the config, load data, train, evaluate, write the run directory.

A run directory is named after what defines the run (method, dataset, backbone, shot, preset,
split, seed and a hash of the full resolved config), so re-running the same command finds the
unfinished run and resumes it from its checkpoint. A lock file keeps two processes out of one
run directory: a second concurrent run of the same config gets a fresh directory instead.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import filelock
import torch
from rich.markup import escape
from rich.text import Text

from fsbench.atomic import atomic_write_json, atomic_write_jsonl
from fsbench.backbones import check_backbone_name
from fsbench.config import BUILT_IN, HardTaskConfig, RunConfig, resolve_preset, to_jsonable
from fsbench.data import FewShotDataset, Normalizer, Split, load_dataset
from fsbench.data.cache import default_cache_dir
from fsbench.engine import distributed
from fsbench.engine.allocator import keep_freed_memory
from fsbench.engine.episodic import MetaTrainSpec, TrainLog, meta_train
from fsbench.engine.evaluate import evaluate_episodes
from fsbench.engine.pretrain import PretrainResult, PretrainSpec
from fsbench.episodes import EpisodeSampler, EpisodeSpec
from fsbench.errors import ConfigError, DivergenceError, FsbenchError, PluginError
from fsbench.fingerprint import fingerprint, flat_overrides, run_settings
from fsbench.hookspecs import MethodRecord
from fsbench.method import Method, MethodContext
from fsbench.options import options_of
from fsbench.plugins import default_registry, describe_failure
from fsbench.precision import resolve_precision
from fsbench.preflight import check_cache_folder, check_pretrained_cache, writable_folder
from fsbench.progress import bar, console, phase_listeners
from fsbench.results import (
    CHECKPOINT,
    CONFIG,
    EPISODES,
    HISTORY,
    SUMMARY,
    load_run,
    run_damage,
    set_aside,
)
from fsbench.safetext import text
from fsbench.stats import CI_FORMULA, mean_ci95

#: Run options that are not part of what a run is (:attr:`Run.key`).
_NOT_IN_KEY = frozenset(d.name for d in options_of(RunConfig) if not d.option.in_key)

#: Characters a run directory's name may take from a method, dataset, backbone or preset name.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    accuracies: torch.Tensor  # per episode, in [0, 1]


def resolve_device(name: str) -> torch.device:
    """``--device`` (a name :class:`RunConfig` has checked) on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def hard_task_config(cfg: RunConfig, record: MethodRecord) -> HardTaskConfig:
    enabled = record.hard_tasks if cfg.hard_tasks is None else cfg.hard_tasks
    base = HardTaskConfig(enabled=enabled)
    return replace(
        base,
        every=cfg.ht_every or base.every,
        count=cfg.ht_count if cfg.ht_count is not None else base.count,
        fill=cfg.ht_fill or base.fill,
        mode=cfg.ht_mode or base.mode,
    )


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("fsbench", "torch", "timm", "pluggy", "numpy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_name(device: torch.device) -> str:
    """The accelerator's name (e.g. 'NVIDIA H100 80GB HBM3'), or the CPU's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _mean_of(rows: list[dict[str, Any]], key: str, phase: str) -> float | None:
    values = [r[key] for r in rows if r.get("phase") == phase and r.get(key) is not None]
    return sum(values) / len(values) if values else None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Run:
    """One resolved run: what it is, where it writes, and how it executes."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        self.show_progress = show_progress
        self.record = default_registry().get(cfg.method)
        self.preset_name = cfg.resolved_preset()
        if self.preset_name not in self.record.presets:
            raise ConfigError(
                f"method {cfg.method!r} has no preset {self.preset_name!r}; "
                f"it has: {', '.join(self.record.presets)}"
            )
        preset = resolve_preset(self.record.presets[self.preset_name], cfg.overrides)
        if cfg.backbone is not None and cfg.backbone != preset.backbone:
            check_backbone_name(cfg.backbone)  # --backbone at planning: unknown names and paths
            preset = replace(preset, backbone=cfg.backbone, backbone_kwargs={})
        self.preset = preset
        self.hard = hard_task_config(cfg, self.record)
        if self.hard.enabled and preset.episodic is None:
            raise ConfigError(f"--hard-tasks needs an episodic method; {cfg.method!r} has no meta-training")
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)  # what features compute in
        # Before the first large tensor; every path (run, `fsbench pretrain`, sweep workers) builds a Run.
        self.allocator = keep_freed_memory()  # fsbench.engine.allocator
        self.cache_dir = cfg.cache_dir or default_cache_dir()
        self._dataset: FewShotDataset | None = None
        self.resolved = {
            "run": to_jsonable(cfg),
            "preset": self.preset_name,
            "backbone": preset.backbone,
            "backbone_kwargs": to_jsonable(preset.backbone_kwargs),
            "hparams": to_jsonable(preset.hparams),
            "episodic": to_jsonable(preset.episodic),
            "pretrain": to_jsonable(preset.pretrain),
            "hard_tasks": to_jsonable(self.hard),
        }

    # -- identity ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """A hash of everything that determines the results: the resolved configuration, without
        the run options declared ``in_key=False`` (where results go, what computes them)."""
        ident = dict(self.resolved)
        ident["run"] = {k: v for k, v in ident["run"].items()
                        if k not in _NOT_IN_KEY
                        and not (k == "eval_dataset" and v is None)}  # same-domain names unchanged
        if self.precision.dtype != "fp32":  # fp32 runs keep the names they had before --precision
            ident["precision"] = self.precision.dtype
        return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def dataset_label(self) -> str:
        """What the run is evaluated on: ``miniimagenet``, or ``miniimagenet->cub`` (cross-domain)."""
        c = self.cfg
        return c.dataset if c.eval_dataset is None else f"{c.dataset}->{c.eval_dataset}"

    @property
    def name(self) -> str:
        """The run directory's name: one path component, whatever the strings it is built from."""
        c = self.cfg
        data = c.dataset if c.eval_dataset is None else f"{c.dataset}-to-{c.eval_dataset}"
        parts = (c.method, data, self.preset.backbone, self.preset_name, c.eval_split)
        method, dataset, backbone, preset, split = (_UNSAFE_NAME.sub("_", p) for p in parts)
        return (f"{method}_{dataset}_{backbone}_{c.way}w{c.shot}s_"
                f"{preset}_{split}_s{c.seed}_e{c.episode_seed}_{self.key}")

    def preflight(self) -> None:
        """Permanent problems said once, before any work (:mod:`fsbench.preflight`)."""
        writable_folder(Path(self.cfg.output), "--output")
        check_cache_folder(self.cache_dir)

    def check(self, dataset: FewShotDataset, eval_data: FewShotDataset | None = None) -> None:
        """A one-line error unless the datasets can supply this run's episodes: the test
        episodes from ``eval_data``'s eval split (``dataset`` unless cross-domain, where both
        must have one image size), meta-training tasks from the train split, validation
        episodes from the val split. The runner and the sweep's planner both check here."""
        cfg, preset = self.cfg, self.preset
        eval_data = dataset if eval_data is None else eval_data
        if eval_data.image_size != dataset.image_size:
            raise ConfigError(f"--eval-dataset {cfg.eval_dataset} has {eval_data.image_size}px "
                              f"images, --dataset {cfg.dataset} {dataset.image_size}px: "
                              "cross-domain evaluation needs one image size")
        spec = EpisodeSpec(cfg.way, cfg.shot, cfg.query)
        spec.check(eval_data.split(cfg.eval_split), "eval")
        if preset.episodic is not None:
            EpisodeSpec(preset.episodic.train_way or cfg.way, cfg.shot,
                        preset.episodic.train_query).check(dataset.split("train"), "train")
        if preset.episodic is not None or preset.pretrain is not None:
            spec.check(dataset.split("val"), "val")

    def claim_dir(self, wait: bool = False) -> tuple[Path, filelock.BaseFileLock]:
        """The run directory to use, locked for this process.

        The first unlocked directory of this run's name that is unfinished (or finished, with
        ``--resume``) is taken over; otherwise a fresh ``name-2``, ``name-3``... is created.
        A finished directory whose results do not validate (:func:`fsbench.results.load_run`)
        is damaged: its files are moved aside (:func:`fsbench.results.set_aside`) and the
        directory is run again. ``wait`` (a sweep's jobs): only the run's own name, waiting
        while another process holds it; finished, it is returned as it is.
        """
        root = Path(self.cfg.output)
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = root / (self.name if n == 1 else f"{self.name}-{n}")
            path.mkdir(exist_ok=True)
            lock = filelock.FileLock(str(path / ".lock"))
            if not _acquire(lock, path, wait):
                continue  # another process runs it
            for stale in path.glob(".*.tmp"):  # left by a killed writer; never a finished name
                stale.unlink(missing_ok=True)
            if (path / SUMMARY).exists():
                damage = run_damage(path)
                if damage is not None:
                    moved = set_aside(path)
                    console.print(f"[yellow]damaged run[/] {path}: {escape(damage)}; its files "
                                  f"were moved to {moved} and it runs again")
                elif not (self.cfg.resume or wait):
                    lock.release()
                    continue
            return path, lock
        raise FsbenchError(f"too many runs named {self.name} under {root}")

    # -- execution --------------------------------------------------------------------------
    def execute(self, wait: bool = False) -> RunResult:
        """Run (or resume, or show the finished) run; ``wait``: see :meth:`claim_dir`."""
        distributed.setup(self.device)  # under torchrun: join the process group (else nothing)
        if not distributed.is_main():
            # Under torchrun, ranks > 0 only help with the pre-training (DDP), in a scratch
            # directory, and leave; rank 0 makes the run.
            import tempfile

            if self.preset.pretrain is not None:
                with tempfile.TemporaryDirectory() as scratch:
                    self._execute(Path(scratch))
            raise SystemExit(0)
        self.preflight()
        dataset = self.dataset()  # a broken dataset or cache entry is said before a directory is made
        if self.preset.pretrain is not None:
            check_pretrained_cache(self.pretrain_path(dataset))
        run_dir, lock = self.claim_dir(wait)
        try:
            if (run_dir / SUMMARY).exists():
                console.print(f"[green]run already complete[/]: {run_dir}")
                return load_result(run_dir)
            return self._execute(run_dir)
        finally:
            lock.release()

    def _execute(self, run_dir: Path) -> RunResult:
        cfg, preset = self.cfg, self.preset
        dataset, eval_data, notes = self._load_data()
        self.check(dataset, eval_data)
        spec = EpisodeSpec(cfg.way, cfg.shot, cfg.query)
        eval_split = eval_data.split(cfg.eval_split)
        train_split = dataset.split("train")
        atomic_write_json(run_dir / CONFIG, {
            **self.resolved, "run_name": run_dir.name, "device": str(self.device),
            "precision": self.precision.label, "channels_last": self.precision.channels_last,
            "allocator": self.allocator, "versions": versions(), "git_commit": git_commit(),
            "dataset_notes": notes,
        })
        torch.manual_seed(cfg.seed)
        dataset = dataset.resident(self.device)  # on a GPU: moved there once (miniImageNet 1.3 GB)
        normalize = Normalizer(dataset.mean, dataset.std, self.device)
        pretrain_seconds, pretrained, history = 0.0, None, []
        if preset.pretrain is not None:
            pre = self.pretrain(dataset)
            pretrained, pretrain_seconds, history = pre.state, pre.seconds, list(pre.history)
            if not distributed.is_main():
                raise SystemExit(0)  # a torchrun helper rank: its part (the pre-training) is done
        method = self._build(dataset, pretrained)
        train_log = TrainLog()
        if preset.episodic is not None:
            task = MetaTrainSpec(dataset.name, train_split, dataset.split("val"), spec, preset.episodic,
                                 self.hard, cfg.seed, cfg.episode_seed, preset.eval_batch)
            train_log = self._guard(lambda: meta_train(method, task, normalize, run_dir / CHECKPOINT, self.show_progress))
            history += train_log.history
        base_seconds = self._fit_base(method, train_split, normalize)  # Method.fit_base, timed
        # Test episodes depend on the episode seed only: every training seed sees the same ones.
        sampler = EpisodeSampler(eval_split, spec, cfg.episode_seed, eval_data.name, stream="eval")
        episodes = sampler.batch(range(cfg.episodes))  # drawn once: evaluated and fingerprinted
        began = time.perf_counter()
        with bar(f"evaluate ({cfg.eval_split})", cfg.episodes, self.show_progress) as progress:
            accs = self._guard(lambda: evaluate_episodes(
                method, eval_split, episodes, normalize, preset.eval_batch, progress.advance
            ))
        eval_seconds = time.perf_counter() - began
        acc, ci = mean_ci95(accs.numpy() * 100)
        settings = run_settings(self.resolved, self.precision.dtype)  # fsbench.fingerprint
        summary = {
            "run_id": run_dir.name, "method": cfg.method, "dataset": self.dataset_label,
            "train_dataset": dataset.name, "eval_dataset": eval_data.name,
            "backbone": preset.backbone, "way": cfg.way, "shot": cfg.shot, "query": cfg.query,
            "paper_backbone": (self.record.presets["paper"].backbone
                               if "paper" in self.record.presets else None),
            "episodes": cfg.episodes, "seed": cfg.seed, "episode_seed": cfg.episode_seed,
            "episode_bank": episodes.fingerprint(),
            "preset": self.preset_name,
            "eval_split": cfg.eval_split, "hard_tasks": self.hard.enabled,
            "hard_tasks_used": train_log.hard_tasks_used,
            "hard_task_mode": self.hard.mode if self.hard.enabled else None,
            "outer_updates": train_log.outer_updates,
            "accuracy": acc, "ci95": ci, "ci_formula": CI_FORMULA,
            "pretrain_seconds": pretrain_seconds, "train_seconds": train_log.seconds + base_seconds,
            "eval_seconds": eval_seconds, "best_val_accuracy": train_log.best_accuracy,
            "best_iteration": train_log.best_iteration, "device": str(self.device),
            "device_name": device_name(self.device), "precision": self.precision.label,
            "channels_last": self.precision.channels_last, "allocator": self.allocator,
            # Only for a pre-training done by this run: a cached backbone may come from another device.
            "pretrain_images_per_s": (_mean_of(history, "images_per_s", phase="pretrain")
                                      if pretrain_seconds > 0 else None),
            "meta_train_episodes": train_log.tasks,
            "meta_train_episodes_per_s": train_log.episodes_per_s,
            "plugin": self.record.plugin, "created": datetime.now(UTC).isoformat(),
            "config_fingerprint": fingerprint(settings), "settings": settings,
            "overrides": flat_overrides(cfg.overrides),
        }
        atomic_write_jsonl(run_dir / EPISODES,
                           ({"index": i, "accuracy": float(a)} for i, a in enumerate(accs.tolist())))
        atomic_write_jsonl(run_dir / HISTORY, history)
        atomic_write_json(run_dir / SUMMARY, summary)  # last: its presence marks the run finished
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        return RunResult(run_dir, summary, accs)

    def _load_data(self) -> tuple[FewShotDataset, FewShotDataset, list[str]]:
        """(training dataset, the dataset the test episodes come from, their notes, printed).

        The second is the first, or --eval-dataset (cross-domain), whose images are normalised
        as the training data's are.
        """
        cfg = self.cfg
        if cfg.dataset in BUILT_IN:
            console.print("[yellow]dataset: built-in synthetic data[/] (use --dataset and --data-root for real data)")
        dataset = self.dataset()
        eval_data = dataset
        if cfg.eval_dataset is not None:
            eval_data = load_dataset(cfg.eval_dataset, cfg.eval_data_root, self.cache_dir / "datasets",
                                     self.show_progress)
        notes = list(dict.fromkeys([*dataset.notes, *eval_data.notes]))
        for note in notes:
            console.print(Text("note: ", style="yellow") + text(note))
        return dataset, eval_data, notes

    def pretrain(self, dataset: FewShotDataset | None = None) -> PretrainResult:
        """The pre-trained backbone this run's preset needs: from the cache, or trained now.

        ``dataset`` (already on the run's device) saves loading it again. ``fsbench pretrain``,
        the run itself and sweep workers all pre-train through here.
        """
        from fsbench.engine.pretrain import ensure_pretrained

        cfg, preset = self.cfg, self.preset
        if preset.pretrain is None:
            needing = sorted(n for n, r in default_registry().methods.items() if r.needs_pretrain)
            raise ConfigError(
                f"method {cfg.method!r} (preset {self.preset_name!r}) needs no pre-trained "
                f"backbone; methods that do: {', '.join(needing) or 'none installed'}"
            )
        if dataset is None:  # alone (`fsbench pretrain`, a sweep's job): checked here
            check_cache_folder(self.cache_dir)
            dataset = self.dataset().resident(self.device)
            check_pretrained_cache(self.pretrain_path(dataset))
        return ensure_pretrained(self.pretrain_spec(dataset), self.cache_dir / "pretrained",
                                 show_progress=self.show_progress)

    def dataset(self) -> FewShotDataset:
        """The run's dataset (decoded, or from the cache), loaded once per :class:`Run`."""
        if self._dataset is None:
            cfg = self.cfg
            self._dataset = load_dataset(cfg.dataset, cfg.data_root, self.cache_dir / "datasets",
                                         self.show_progress)
        return self._dataset

    def pretrain_key(self, dataset: FewShotDataset) -> str:
        """The cache key of the pre-training this run needs, as ``ensure_pretrained`` names it."""
        return self.pretrain_spec(dataset).key

    def pretrain_path(self, dataset: FewShotDataset) -> Path:
        """The cache file of the pre-training this run needs, named as ``ensure_pretrained`` names it."""
        return self.cache_dir / "pretrained" / f"{self.pretrain_spec(dataset).key}.pt"

    def pretrain_spec(self, dataset: FewShotDataset) -> PretrainSpec:
        """The pre-training this run's preset needs (its weights and cache key depend on it)."""
        preset = self.preset
        return PretrainSpec(dataset, preset.backbone, dict(preset.backbone_kwargs), preset.pretrain,
                            self.preset_name, self.cfg.seed, self.cfg.way, self.precision, self.device)

    def _build(self, dataset: FewShotDataset, pretrained: dict[str, torch.Tensor] | None) -> Method:
        train = dataset.split("train")
        ctx = MethodContext(
            preset=self.preset, backbone=self.preset.backbone,
            backbone_kwargs=dict(self.preset.backbone_kwargs), num_train_classes=train.num_classes,
            image_shape=train.image_shape, device=self.device, seed=self.cfg.seed,
            way=self.cfg.way, shot=self.cfg.shot, pretrained=pretrained, precision=self.precision,
        )
        method = self._guard(lambda: self.record.cls(ctx))
        return method.to(self.device)

    def _fit_base(self, method: Method, train: Split, normalize: Normalizer) -> float:
        """Seconds taken by the method's :meth:`~fsbench.method.Method.fit_base` on the train split."""
        if type(method).fit_base is Method.fit_base:
            return 0.0  # the method learns nothing from the base classes
        began = time.perf_counter()
        self._guard(lambda: method.fit_base(train, normalize))
        return time.perf_counter() - began

    def _guard(self, fn):
        """Run plugin code; a plugin's own failure is reported naming the plugin."""
        try:
            return fn()
        except (FsbenchError, DivergenceError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            raise PluginError(describe_failure(f"{self.record.plugin}:{self.record.name}", exc)) from exc


def load_result(run_dir: Path) -> RunResult:
    """A finished run, validated as every reader of results validates it."""
    summary = load_run(run_dir)
    accuracies = torch.tensor(summary.pop("episode_acc"), dtype=torch.float64)
    del summary["run_dir"], summary["history"]
    return RunResult(run_dir, summary, accuracies)


def _acquire(lock: filelock.BaseFileLock, path: Path, wait: bool) -> bool:
    """Take ``lock`` now; with ``wait``, after whoever holds it lets go (said once)."""
    try:
        lock.acquire(timeout=0)
        return True
    except filelock.Timeout:
        if not wait:
            return False
    for listener in phase_listeners:
        listener("waiting for another process")
    console.print(f"[yellow]waiting[/] for another process running {path}")
    lock.acquire()
    return True


def run(cfg: RunConfig, show_progress: bool = True, wait: bool = False) -> RunResult:
    return Run(cfg, show_progress).execute(wait)


__all__ = ["Run", "RunResult", "run", "load_result", "asdict"]
