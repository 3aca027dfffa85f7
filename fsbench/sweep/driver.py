"""Run a plan on an executor: live progress, results written under ``--output``.

The driver is the only writer of a sweep's results: a run job's files come back as data (from
executors whose workers share no filesystem) and are written here atomically, ``summary.json``
last, into ``OUTPUT/<run name>``, the directory ``fsbench run`` would have used. Jobs already
done (``summary.json`` present, pre-training cached) are never handed to the executor, so
re-running a sweep after a crash runs only what is missing. A damaged run (finished, but its
results do not validate) has its files moved aside (:func:`fsbench.results.set_aside`) before
it runs again. Data strings (job names, errors) are printed as rich ``Text``, never as markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fsbench.progress import console
from fsbench.results import LOCK, SUMMARY, run_damage, set_aside
from fsbench.safetext import text
from fsbench.sweep.executor import Executor, Work
from fsbench.sweep.jobs import install_cache_entry, write_run_files
from fsbench.sweep.plan import Plan

__all__ = ["JobState", "SweepOutcome", "run_sweep", "set_aside_damaged"]

MAX_ROWS = 40  # jobs listed individually in the live view; beyond, running and failed ones


@dataclass
class JobState:
    id: str
    kind: str  # "pretrain" or "run"
    label: str
    state: str = "queued"  # queued, running, done, failed, skipped
    phase: str = ""
    detail: str = ""
    attempts: int = 0
    pid: int | None = None
    host: str = ""
    began: float | None = None
    ended: float | None = None


@dataclass
class SweepOutcome:
    run_dirs: list[Path]  # every run of the plan that has a summary now, in plan order
    failed: dict[str, str] = field(default_factory=dict)  # job id -> one-line error
    pretrained: list[str] = field(default_factory=list)  # cache keys trained (not reused) now
    states: dict[str, JobState] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _render(states: dict[str, JobState], began: float) -> Group:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("job", "state", "detail"):
        table.add_column(col, overflow="fold")
    rows = list(states.values())
    if len(rows) > MAX_ROWS:
        rows = [s for s in rows if s.state in ("running", "failed")][:MAX_ROWS]
    colours = {"queued": "dim", "running": "cyan", "done": "green", "failed": "red", "skipped": "dim"}
    for s in rows:
        if s.state == "running":
            detail = s.phase + (f" (attempt {s.attempts})" if s.attempts > 1 else "")
        else:
            detail = s.detail
        table.add_row(text(s.label), text(s.state, colours.get(s.state, "")), text(detail))
    return Group(table, Text(_totals(states, began), style="bold"))


def _totals(states: dict[str, JobState], began: float) -> str:
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    parts = [f"{counts.get(k, 0)} {k}" for k in ("done", "running", "queued", "failed", "skipped")]
    return f"{len(states)} jobs: " + ", ".join(parts) + f"; elapsed {time.perf_counter() - began:.0f} s"


def _initial_states(plan: Plan, work: Work) -> dict[str, JobState]:
    states: dict[str, JobState] = {}
    todo = {p.id for p in work.pretrains}
    for p in plan.pretrains.values():
        st = JobState(p.id, "pretrain", f"pretrain {p.key}")
        if p.done or p.id not in todo:
            st.state, st.detail = "skipped", "cached" if p.done else "not needed"
        states[p.id] = st
    for r in plan.runs.values():
        st = JobState(r.id, "run", r.id)
        if r.done:
            st.state, st.detail = "skipped", "done before"
        states[r.id] = st
    return states


def set_aside_damaged(plan: Plan, show: bool) -> None:
    """Move the files of each damaged run (see :mod:`fsbench.sweep.plan`) aside before it runs
    again, unless another process holds its directory (that process does it)."""
    for r in plan.todo_runs:
        if r.damage is None:
            continue
        lock = filelock.FileLock(str(r.run_dir / LOCK))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            continue
        try:
            if run_damage(r.run_dir) is not None:
                moved = set_aside(r.run_dir)
                if show:
                    console.print(Text("damaged ", style="yellow") + text(f"{r.id}: {r.damage}; "
                                  f"its files were moved to {moved} and it runs again"))
        finally:
            lock.release()


class _Events:
    """The driver's handling of executor events: job states, results written, lines printed."""

    def __init__(self, plan: Plan, outcome: SweepOutcome, echo: bool) -> None:
        self.plan, self.outcome, self.echo = plan, outcome, echo
        self.states = outcome.states

    def __call__(self, event: dict[str, Any]) -> None:
        st = self.states.get(event.get("job", ""))
        if st is None:
            return
        kind = event.get("state")
        if kind in ("running", "phase"):
            if st.state in ("done", "failed"):
                return  # a late progress event
            if kind == "running":
                st.attempts += 1
                st.began = st.began or time.perf_counter()
                st.pid, st.host = event.get("pid"), event.get("host", "")
            st.state, st.phase = "running", event.get("phase", "")
        elif kind == "done":
            st.state, st.ended = "done", time.perf_counter()
            self._done(st, event.get("result") or {})
            self._echo(Text("done   ", style="green"), st)
        elif kind == "failed":
            st.state, st.ended = "failed", time.perf_counter()
            st.detail = str(event.get("error", "?")).splitlines()[0] if event.get("error") else "?"
            self.outcome.failed[st.id] = st.detail
            self._echo(Text("failed ", style="red"), st)

    def _echo(self, head: Text, st: JobState) -> None:
        if self.echo:
            console.print(head + text(f"{st.label}: {st.detail}"))

    def _done(self, st: JobState, result: dict[str, Any]) -> None:
        if st.kind == "pretrain":
            job = self.plan.pretrains[st.id]
            if result.get("files"):
                install_cache_entry(job.path.parent.parent, result["files"])
            if not result.get("cached"):
                self.outcome.pretrained.append(job.key)
            st.detail = (f"val probe {result.get('best_accuracy', float('nan')):.1f}%"
                         f" ({'reused' if result.get('cached') else 'trained'})")
            return
        run = self.plan.runs[st.id]
        if result.get("files"):
            name = result.get("run_name") or run.id
            write_run_files(run.run_dir.parent / name, result["files"], run.run_dir.parent)
        summary = result.get("summary") or {}
        st.detail = (f"accuracy {summary.get('accuracy', float('nan')):.2f} ± "
                     f"{summary.get('ci95', float('nan')):.2f}%")
        if result.get("run_name") and result["run_name"] != run.id:
            run.run_dir = run.run_dir.parent / result["run_name"]


def run_sweep(
    plan: Plan,
    executor: Executor,
    *,
    show: bool = True,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run what ``plan`` has left to do on ``executor``; see the module docstring.

    ``on_event`` sees every executor event after the driver has handled it (tests use it).
    """
    began = time.perf_counter()
    work = Work(plan.todo_pretrains, plan.todo_runs,
                {p.id: p.path for p in plan.pretrains.values() if p.done})
    has_work = bool(work.pretrains or work.runs)
    if has_work:
        executor.check(work)
        set_aside_damaged(plan, show)
    outcome = SweepOutcome(run_dirs=[], states=_initial_states(plan, work))
    states = outcome.states
    interactive = show and console.is_terminal
    events = _Events(plan, outcome, echo=show and not interactive)

    def handle(event: dict[str, Any]) -> None:
        events(event)
        if on_event is not None:
            on_event(event)

    if not has_work:
        if show:
            console.print("sweep: every run is already done")
    elif interactive:
        with Live(_render(states, began), console=console, refresh_per_second=4,
                  transient=False) as live:

            def live_handle(event: dict[str, Any]) -> None:
                handle(event)
                live.update(_render(states, began))

            executor.run(work, live_handle)
            live.update(_render(states, began))
    else:
        if show:
            console.print(f"sweep: {len(work.pretrains)} pre-training(s) and {len(work.runs)} run(s) "
                          f"to do on the {executor.name or type(executor).__name__} executor")
        executor.run(work, handle)
    for st in states.values():  # an executor that ended without a word on a job
        if st.state in ("queued", "running"):
            st.state, st.detail = "failed", "the executor ended without a result"
            outcome.failed[st.id] = st.detail
    outcome.seconds = time.perf_counter() - began
    outcome.run_dirs = [r.run_dir for r in plan.runs.values() if (r.run_dir / SUMMARY).exists()]
    if show and not (interactive and has_work):  # the live view ends with the totals
        console.print(_totals(states, began))
    return outcome
