"""Multi-process pre-training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc-per-node N fsbench pretrain ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in their environment; :func:`setup` joins the
process group (``nccl`` on GPUs, ``gloo`` on CPUs) and gives each rank its device. The
pre-training loop (:mod:`fsbench.engine.pretrain`) then wraps backbone + head in DDP; each rank
takes its shard of every batch (:func:`shard`: a strided slice of the batch's indices, a pure
function of seed, epoch, batch and rank) with its own seeded augmentation (:func:`rank_salt`),
gradients are averaged across ranks, and only rank 0 writes checkpoints and the cache entry
(atomically). A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) is exactly the
non-distributed loop: every helper here is then the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "barrier", "broadcast_flag", "is_main", "main_only", "rank", "rank_salt", "setup", "shard",
    "world_size", "wrap",
]


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); this rank's device.

    Idempotent. ``cuda`` becomes ``cuda:LOCAL_RANK``; the CPU stays the CPU (gloo). Ranks other
    than 0 print nothing (rank 0 reports for all).
    """
    device = torch.device(device)
    if _env_world() <= 1 or not dist.is_available():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.get_rank() != 0:
        from fsbench.progress import console

        console.quiet = True
    return device


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's part of a batch's indices (every ``world``-th from ``rank``); all when alone."""
    n = world_size()
    return idx if n == 1 else idx[rank()::n]


def rank_salt() -> tuple[int, ...]:
    """Extra seed parts for per-rank random streams: none alone (seeds as before), else the rank."""
    return () if world_size() == 1 else (rank(), world_size())


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun, else ``module`` itself."""
    if world_size() == 1:
        return module
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def main_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on rank 0; a no-op on the other ranks (checkpoints and cache files)."""
    if is_main():
        return fn

    def skip(*args: Any, **kwargs: Any) -> None:
        return None

    return skip


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (so that all ranks take the same branch)."""
    if world_size() == 1:
        return flag
    device = torch.device(device)
    t = torch.tensor([1 if flag else 0], device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
