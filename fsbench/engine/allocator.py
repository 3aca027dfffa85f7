"""Keep freed memory in the process: the CPU allocator setting every run starts with.

On Linux, glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and gives it back with ``munmap`` when it is freed. A Conv-4 training step on a
5-way episode (80 images at 84x84) allocates activations of 36 M elements (69 MiB in bf16) in
its first block, several per step: each of them was a fresh mapping whose pages the kernel
faulted in and zeroed again, so on a CPU the element-wise layers (batch norm, ReLU, max pooling)
spent much of their time in page faults (``benchmarks/allocator_speed.py`` measures the step
with and without it; README, "Precision and CPU speed", has the figures).

:func:`keep_freed_memory` turns glibc's mmap path off (``M_MMAP_MAX = 0``) and its trimming of
the heap's top (``M_TRIM_THRESHOLD``), so large blocks are recycled inside the heap and the pages
stay mapped. The numbers computed are the same; only the process's memory is not returned to
the system before it exits (its resident size stays at its peak). Elsewhere (macOS, musl,
Windows) nothing is changed. ``FSBENCH_ALLOCATOR=system`` in the environment keeps the system's
default behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from fsbench.errors import ConfigError

__all__ = ["ENV", "keep_freed_memory"]

#: The environment variable that opts out (``system``) of the setting.
ENV = "FSBENCH_ALLOCATOR"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Freed memory at the heap's top above this is given back (mallopt takes an int: 2 GiB, far
#: above what one training step frees at once).
_TRIM_ABOVE = 2**31 - 1

_state: str | None = None


def keep_freed_memory() -> str:
    """Apply the setting once per process and say what holds: ``"kept"`` (glibc tuned),
    ``"system"`` (opted out with ``FSBENCH_ALLOCATOR=system``) or ``"unsupported"`` (not glibc).

    Raises:
        ConfigError: ``FSBENCH_ALLOCATOR`` holds something other than ``keep`` or ``system``.
    """
    global _state
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in ("keep", "system"):
        raise ConfigError(f"{ENV} must be 'keep' or 'system', got {os.environ[ENV]!r}")
    if _state is not None:
        return _state
    if choice == "system":
        _state = "system"
        return _state
    _state = "kept" if _tune_glibc() else "unsupported"
    return _state


def _tune_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trimmed = mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(trimmed)
