"""What a worker executes for one job, whatever the executor; results come back as plain data.

``execute_job`` runs one job in the calling process and returns a JSON-able dict (bytes for file
contents): ``{"ok": True, ...}`` or ``{"ok": False, "error": "<one line>"}``. It never raises
for a job's own failure, so an executor tells a failing run (reported, the sweep goes on) from a
lost worker (an exception of the executor's engine, retried there).

* A pre-training job calls :meth:`fsbench.runner.Run.pretrain` exactly as ``fsbench pretrain``
  does (same cache key, file lock, resume). With ``return_files`` it returns
  the cache entry's files, for an executor that passes them to dependent runs without a shared
  cache directory.
* A run job calls :func:`fsbench.runner.run`, the code path of ``fsbench run``. Given
  ``pretrain_files`` it first installs them in its cache directory (atomically, unless already
  there). With ``scratch`` it runs in a temporary output directory and returns the run
  directory's files, for the driver to write under the sweep's ``--output``.

Progress: ``emit`` (if given) receives ``{"job", "state": "running" | "phase", "phase", "pid",
"host"}`` events; phases come from the progress bars the engine opens.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fsbench import strictjson
from fsbench.config import RunConfig

Emit = Callable[[dict[str, Any]], None]

#: Files of a run directory that travel back to the driver (the checkpoint and lock do not).
RUN_FILES = ("config.json", "episodes.jsonl", "history.jsonl", "summary.json")


def one_line(exc: BaseException) -> str:
    """An exception as one line: fsbench's own errors by their message, others with their type."""
    from fsbench.errors import FsbenchError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, FsbenchError) and text:
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def execute_job(
    kind: str,
    job_id: str,
    cfg: RunConfig,
    *,
    emit: Emit | None = None,
    pretrain: dict[str, Any] | None = None,
    scratch: bool = False,
    return_files: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one job here; see the module docstring. ``kind`` is ``"pretrain"`` or ``"run"``."""
    from fsbench import progress

    def send(event: dict[str, Any]) -> None:
        if emit is not None:
            try:
                emit({"job": job_id, "pid": os.getpid(), "host": socket.gethostname(), **event})
            except Exception:  # progress must never fail a job
                pass

    def on_phase(description: str) -> None:
        send({"state": "phase", "phase": description})

    quiet = progress.console.quiet
    progress.console.quiet = True  # the driver shows progress; a worker's prints would garble it
    progress.phase_listeners.append(on_phase)
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(max(1, threads))
        send({"state": "running", "phase": "starting"})
        if kind == "pretrain":
            return {"ok": True, **_pretrain(cfg, return_files)}
        if kind == "run":
            if pretrain is not None and not pretrain.get("ok", True):
                return {"ok": False, "error": f"its pre-training failed: {pretrain.get('error')}"}
            return {"ok": True, **_run(cfg, pretrain, scratch)}
        raise ValueError(f"unknown job kind {kind!r}")
    except Exception as exc:  # a job's own failure: reported, the sweep goes on
        return {"ok": False, "error": one_line(exc)}
    finally:
        progress.phase_listeners.remove(on_phase)
        progress.console.quiet = quiet


def _pretrain(cfg: RunConfig, return_files: bool) -> dict[str, Any]:
    from fsbench.runner import Run

    result = Run(cfg, show_progress=False).pretrain()  # as `fsbench pretrain` and a run do
    out: dict[str, Any] = {
        "key": result.path.stem, "path": str(result.path), "cached": result.cached,
        "seconds": result.seconds, "best_accuracy": result.best_accuracy,
        "best_epoch": result.best_epoch,
    }
    if return_files:
        out["files"] = {p.name: p.read_bytes() for p in _cache_entry(result.path)}
    return out


def _cache_entry(path: Path) -> list[Path]:
    """A pre-training cache entry: the weights file and its JSON description."""
    return [p for p in (path, path.with_suffix(".json")) if p.exists()]


def read_cache_entry(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in _cache_entry(Path(path))}


def install_cache_entry(cache_dir: Path, files: dict[str, bytes]) -> None:
    """Write a pre-training's files into ``cache_dir/pretrained`` unless they are there."""
    from fsbench.atomic import atomic_write_bytes

    folder = Path(cache_dir) / "pretrained"
    # The JSON first: the .pt file's presence is what marks the entry finished.
    for name in sorted(files, key=lambda n: n.endswith(".pt")):
        if Path(name).name != name or not name.endswith((".pt", ".json")):
            raise ValueError(f"refusing to install pre-training file {name!r}")
        if not (folder / name).exists():
            atomic_write_bytes(folder / name, files[name])


def _run(cfg: RunConfig, pretrain: dict[str, Any] | None, scratch: bool) -> dict[str, Any]:
    from fsbench.data.cache import default_cache_dir
    from fsbench.runner import run

    if pretrain is not None and pretrain.get("files"):
        install_cache_entry(cfg.cache_dir or default_cache_dir(), pretrain["files"])
    if not scratch:
        result = run(cfg, show_progress=False, wait=True)  # another sweep's run: wait, never name-2
        return {"run_name": result.run_dir.name, "summary": result.summary}
    tmp = Path(tempfile.mkdtemp(prefix="fsbench-sweep-"))
    try:
        result = run(replace(cfg, output=tmp), show_progress=False)
        files = {name: (result.run_dir / name).read_bytes()
                 for name in RUN_FILES if (result.run_dir / name).exists()}
        return {"run_name": result.run_dir.name, "summary": result.summary, "files": files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_run_files(run_dir: Path, files: dict[str, bytes], output: Path) -> None:
    """Write a run directory's files that came back from a worker; ``summary.json`` last.

    ``config.json`` recorded the worker's scratch output: it is set to the sweep's ``output``.
    """
    from fsbench.atomic import atomic_write_bytes, atomic_write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == "summary.json"):
        if name not in RUN_FILES:
            raise ValueError(f"refusing to write unexpected run file {name!r}")
        if name == "config.json":
            config = strictjson.loads(files[name], f"{run_dir / name} (from a worker)")
            if isinstance(config.get("run"), dict):
                config["run"]["output"] = str(output)
            atomic_write_json(run_dir / name, config)
        else:
            atomic_write_bytes(run_dir / name, files[name])
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # stale, from an earlier interrupted attempt
