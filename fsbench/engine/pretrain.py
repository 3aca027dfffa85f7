"""Many-shot supervised pre-training of a backbone, shared by every method that needs one: what
one pre-training is (:class:`PretrainSpec`), its cache, and :func:`ensure_pretrained`.

The "pre-training" phase of Meta-Transfer Learning (Sun, Liu, Chua, Schiele, CVPR 2019, Sec. 4.1)
and of its "finetune on pre-trained model" baseline: the backbone plus a classifier head over
*all* train classes (64-way on miniImageNet, 60-way on FC100) trained by ordinary softmax
classification, the epoch with the best nearest-centroid probe on val episodes kept. The training
loop is :mod:`fsbench.engine.pretrain_loop`; the result is the backbone's ``state_dict`` as built
by ``create_backbone(name, **kwargs)`` (no classifier); the head of the same epoch is kept beside
it only as a distillation teacher's.

Two variants, each its own cache entry (their settings enter the key): ``head="cosine"``, the
cosine classifier with learned per-class gains of Baseline++, and ``distill_generations=k``,
born-again self-distillation from generation ``k - 1`` (RFS, :mod:`fsbench.engine.distill`).

Cache: one finished file per :class:`PretrainSpec` (dataset, backbone, backbone kwargs, preset,
seed, :class:`~fsbench.config.PretrainConfig`, probe, precision), under ``cache_dir``; a second
method or run that needs the same backbone loads it instead of training again (and says so). A
``filelock`` keeps two processes from training the same backbone at once: the second waits for
the first, then reuses its result. To retrain, delete the file the message names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import filelock
import torch

from fsbench.checkpoints import safe_torch_load
from fsbench.progress import console

from . import distributed, pretrain_loop
from .pretrain_spec import (
    PretrainResult,
    PretrainSpec,
    cache_key,
    check_pretrain_config,
    probe_spec,
)

__all__ = ["PretrainResult", "PretrainSpec", "cache_key", "ensure_pretrained", "probe_spec"]

def ensure_pretrained(spec: PretrainSpec, cache_dir: Path, show_progress: bool = True,
                      resume: bool = True) -> PretrainResult:
    """The pre-trained backbone ``spec`` names: from the cache, or trained now and cached.

    With ``resume`` (the default) an interrupted pre-training continues from its per-epoch
    checkpoint; ``resume=False`` discards such a checkpoint and starts over. A finished file is
    always reused (delete it to retrain).

    Raises:
        DivergenceError: the training loss became non-finite.
        ConfigError: invalid ``spec.cfg``, or val episodes the val split cannot fill.
    """
    check_pretrain_config(spec.cfg)
    # Under torchrun: the process group, and this rank's device.
    spec = replace(spec, device=distributed.setup(torch.device(spec.device)))
    spec.probe.check(spec.dataset.split("val"), "val")
    key = spec.key
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{key}.pt"
    if distributed.world_size() == 1 and final.exists():
        return _load_cached(final)
    teacher = None
    if spec.cfg.distill_generations:  # born-again: generation k learns from k - 1 (engine/distill.py)
        teacher = ensure_pretrained(spec.previous_generation(), cache_dir, show_progress, resume)
    job = pretrain_loop.Job(spec, key, final, cache_dir / f"{key}.ckpt.pt", teacher)
    if distributed.world_size() > 1:  # torchrun: all ranks train (DDP), rank 0 writes
        return _ensure_distributed(job, cache_dir, show_progress, resume)
    lock = filelock.FileLock(str(cache_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        console.print(f"[yellow]waiting[/] for another process pre-training the same backbone ({final})")
        lock.acquire()
    try:
        if final.exists():  # trained by the process we waited for
            return _load_cached(final)
        return pretrain_loop.train(job, show_progress, resume)
    finally:
        lock.release()


def _load_cached(path: Path) -> PretrainResult:
    saved = safe_torch_load(path)
    meta = saved.get("meta", {})
    console.print(
        f"[green]reusing pre-trained backbone[/] {meta.get('backbone', '?')} "
        f"(preset {meta.get('preset', '?')}, seed {meta.get('seed', '?')}, best val probe "
        f"{saved['best_accuracy']:.1f}% at epoch {saved['best_epoch']}): {path}"
    )
    return PretrainResult(
        state=saved["state"], seconds=0.0, history=list(saved["history"]), path=path, cached=True,
        best_accuracy=float(saved["best_accuracy"]), best_epoch=int(saved["best_epoch"]),
        head=saved.get("head"),
    )


def _ensure_distributed(job: pretrain_loop.Job, cache_dir: Path, show_progress: bool,
                        resume: bool) -> PretrainResult:
    """:func:`ensure_pretrained` under torchrun: rank 0 holds the file lock and decides (cached or
    not) for all; every rank trains its shard; the other ranks load what rank 0 wrote."""
    main = distributed.is_main()
    lock = filelock.FileLock(str(cache_dir / f"{job.key}.lock")) if main else None
    if lock is not None:
        lock.acquire()  # the other ranks wait in the broadcast below
    try:
        result = None
        if not distributed.broadcast_flag(job.final.exists(), job.spec.device):
            result = pretrain_loop.train(job, show_progress and main, resume)
        distributed.barrier()  # rank 0's cache entry is complete
        return result if main and result is not None else _load_cached(job.final)
    finally:
        if lock is not None:
            lock.release()
