"""The CPU allocator setting (fsbench.engine.allocator): freed memory stays mapped, the opt-out
works, a run records the setting and a bad value is a one-line error. That the numbers do not
change is tests/test_precision.py's bit-exact fp32 run, made with the setting on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsbench.engine import allocator
from fsbench.errors import ConfigError

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="the setting acts on glibc's malloc only",
)

#: Page faults of a loop that allocates, writes and frees a 64 MiB tensor, after a warm-up.
_PROBE = """
import json, resource, sys
import torch
from fsbench.engine.allocator import keep_freed_memory
state = keep_freed_memory()
def step():
    x = torch.empty(64 * 2**20, dtype=torch.uint8)
    x.fill_(1)
    del x
for _ in range(8):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps({"state": state, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if value is not None:
        env[allocator.ENV] = value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_glibc
def test_kept_memory_is_not_faulted_in_again_and_system_opts_out():
    kept, system = _probe(None), _probe("system")
    assert kept["state"] == "kept" and system["state"] == "system"
    # 10 x 64 MiB freshly mapped: 163,840 faults of 4 KiB pages with the system's default.
    assert system["faults"] > 10 * 64 * 2**20 // 4096 // 2
    # Kept: at most two of the ten steps fault their 64 MiB in again (one did, once, in a full
    # test run on a loaded machine: 16,385 faults against the system's 163,850).
    assert kept["faults"] < system["faults"] * 3 / 10


def test_an_unknown_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(ConfigError, match="FSBENCH_ALLOCATOR must be 'keep' or 'system', got 'jemalloc'"):
        allocator.keep_freed_memory()


@linux_glibc
def test_a_run_records_the_allocator(tmp_path):
    from fsbench.config import RunConfig
    from fsbench.runner import run

    result = run(RunConfig(method="protonet", preset="smoke", episodes=5, device="cpu",
                           output=tmp_path / "runs", cache_dir=tmp_path / "cache"), show_progress=False)
    assert result.summary["allocator"] == "kept"
    assert json.loads((result.run_dir / "config.json").read_text())["allocator"] == "kept"
