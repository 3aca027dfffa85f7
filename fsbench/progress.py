"""Rich progress bars for long work (training, evaluation, decoding), on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

console = Console(stderr=True)

#: Called with each bar's description as the bar starts ("pre-train", "meta-train", "evaluate
#: (test)"), shown or not: a sweep worker reports its job's phase through it.
phase_listeners: list[Callable[[str], None]] = []


class Bar:
    """One progress bar; ``advance`` moves it, ``note`` sets the text after it (loss, val acc)."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)


#: Below this terminal width the bars use the compact layout (short bar, clipped note).
WIDE = 120


def make_progress(target: Console | None = None, *, transient: bool = False,
                  info: bool = True) -> Progress:
    """A progress display that fits its console: counts and times are never cut.

    Every column but the description and the note is ``no_wrap`` with a fixed minimum width; on
    a console narrower than :data:`WIDE` the bar shrinks to 12 cells, the description is capped
    at 20 and the note (loss, val accuracy) takes what is left, clipped with an ellipsis.
    """
    target = target or console
    wide = target.size.width >= WIDE
    columns = [
        TextColumn("[bold]{task.description}", table_column=Column(
            no_wrap=True, overflow="ellipsis", min_width=None if wide else 16,
            max_width=None if wide else 20)),
        BarColumn(bar_width=40 if wide else 12),
        MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=9)),
        TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
        TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)),
    ]
    if info:
        # The other columns take at most 20 + 12 + 9 + 7 + 7 cells and 5 separators.
        note_width = None if wide else max(10, target.size.width - 61)
        columns.append(TextColumn("{task.fields[info]}", table_column=Column(
            no_wrap=True, overflow="ellipsis", max_width=note_width)))
    return Progress(*columns, console=target, transient=transient, expand=False)


@contextmanager
def bar(description: str, total: int, enabled: bool = True, completed: int = 0) -> Iterator[Bar]:
    for listener in phase_listeners:
        listener(description)
    if not enabled:
        yield Bar(None, None)
        return
    progress = make_progress()
    with progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield Bar(progress, task)
