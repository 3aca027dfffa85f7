"""Text from data, made inert for a terminal: the one rule every printer of data strings follows.

Method, dataset and backbone names, notes and error messages come from run directories, grids
and plugins, not from fsbench: they may hold terminal escape sequences (``\\x1b[31m``, OSC 8
hyperlinks), other control characters, Unicode bidirectional overrides, or rich markup
(``[bold red]``, ``[link=...]``). :func:`printable` spells every control character out as a
visible escape (``\\x1b``, ``\\n``), and :func:`text` wraps the result in a rich
:class:`~rich.text.Text`, which rich prints literally: markup in it is never interpreted. Never
build a markup string from data; pass data through :func:`text`.
"""

from __future__ import annotations

import re

from rich.text import Text

__all__ = ["printable", "text"]

# C0 and C1 controls, DEL, line/paragraph separators, bidirectional embeddings and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(value: object) -> str:
    """``str(value)`` with every control character spelled out (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _CONTROL.sub(_escape, str(value))


def text(value: object, style: str = "") -> Text:
    """``value`` as a rich Text: control characters spelled out, markup printed literally."""
    return Text(printable(value), style=style)
