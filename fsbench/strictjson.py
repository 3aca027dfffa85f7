"""Strict JSON, both ways: what fsbench writes and what it accepts when it reads.

JSON has no NaN or Infinity; Python's ``json`` module writes and reads them anyway, and it parses
integers of thousands of digits, floats that overflow to ``inf`` and nesting deep enough to
exhaust the interpreter's stack. fsbench does neither:

* :func:`dumps` writes non-finite floats as ``null`` (the value is not available, e.g. the CI of a
  single validation episode) and then refuses anything non-finite (``allow_nan=False``);
* :func:`loads` refuses ``NaN``, ``Infinity``, integers outside the signed 64-bit range, floats
  that overflow, and nesting deeper than :data:`MAX_DEPTH`, each with a one-line
  :class:`JSONError` naming where the text came from;
* :func:`read_json` and :func:`read_jsonl` bound a file's size before reading it;
* :func:`check_parsed` holds a value another parser gave (TOML: grids, ``--config``) to the
  same rules.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fsbench.errors import FsbenchError

__all__ = ["MAX_DEPTH", "JSONError", "check_parsed", "dumps", "finite_or_null", "loads", "read_json",
           "read_jsonl"]

#: Deepest nesting of arrays and objects fsbench accepts (its own files nest 4 levels at most).
MAX_DEPTH = 32

_INT_DIGITS = 19  # a signed 64-bit integer has at most 19 digits
_INT_RANGE = (-(2**63), 2**63 - 1)


class JSONError(FsbenchError):
    """A JSON file or text fsbench refuses; the message is one line naming it."""


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) in it replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``obj`` with non-finite floats written as null, never as NaN/Infinity."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS or not _INT_RANGE[0] <= int(text) <= _INT_RANGE[1]:
        raise ValueError(f"integer {text[:20]}{'...' if len(text) > 20 else ''} is out of range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _first_problem(value: Any, limit: int, numbers: bool = True) -> str | None:
    """What makes ``value`` (parsed JSON or TOML) unfit, or None: nesting deeper than
    ``limit``, and with ``numbers`` a non-finite float or an integer outside 64 bits."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if numbers and isinstance(item, float) and not math.isfinite(item):
            return f"number {item} is out of range"
        if numbers and isinstance(item, int) and not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
            return f"integer {str(item)[:20]}... is out of range"
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)) and depth + 1 > limit:
                return f"nested too deeply (more than {limit} levels)"
            stack.append((child, depth + 1))
    return None


def check_parsed(value: Any, where: str) -> Any:
    """``value``, parsed from JSON or TOML by another parser, held to :func:`loads`' rules."""
    problem = _first_problem(value, MAX_DEPTH)
    if problem is not None:
        raise JSONError(f"{where}: {problem}")
    return value


def loads(text: str | bytes, where: str) -> Any:
    """Parse ``text`` strictly (see the module docstring); errors name ``where``."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise JSONError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise JSONError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONError(f"{where}: invalid JSON ({str(exc).splitlines()[0][:200]})") from None
    problem = _first_problem(value, MAX_DEPTH, numbers=False)  # numbers: checked while parsing
    if problem is not None:
        raise JSONError(f"{where}: JSON {problem}")
    return value


def _read_bounded(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise JSONError(f"{path}: {size:,} bytes, more than the {max_bytes:,} such a file may have")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise JSONError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while being read
        raise JSONError(f"{path}: more than the {max_bytes:,} bytes such a file may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_json(path: str | os.PathLike[str], max_bytes: int) -> Any:
    """The JSON value of file ``path``, refused (one line) when larger than ``max_bytes``."""
    path = Path(path)
    return loads(_read_bounded(path, max_bytes), str(path))


def read_jsonl(path: str | os.PathLike[str], max_bytes: int, max_records: int) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped); errors name file and line.

    A file larger than ``max_bytes`` or with more than ``max_records`` records is refused
    before its records are parsed.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(_read_bounded(path, max_bytes).splitlines(), 1)
             if line.strip()]
    if len(lines) > max_records:
        raise JSONError(f"{path}: {len(lines):,} records, more than the {max_records:,} expected")
    records = []
    for lineno, line in lines:
        record = loads(line, f"{path}:{lineno}")
        if not isinstance(record, dict):
            raise JSONError(f"{path}:{lineno}: expected a JSON object")
        records.append(record)
    return records
