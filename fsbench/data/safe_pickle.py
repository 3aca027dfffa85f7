"""Load untrusted pickles (CIFAR-100's python-version files) without running arbitrary code.

``pickle.load`` calls whatever callable a pickle names, so a downloaded "dataset" file can run
``os.system``. :func:`safe_load` uses a ``pickle.Unpickler`` whose ``find_class`` admits only the
few globals a numpy array needs to be rebuilt:

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` (protocols 0-4),
* ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer`` (protocol 5),
* ``numpy.ndarray`` and ``numpy.dtype``,
* ``_codecs.encode`` restricted to the latin-1 codec (how Python 3 writes ``bytes`` under protocol
  2, which includes the raw data of every array).

Dicts, lists, tuples, str, bytes, numbers, bool and None need no globals. Anything else --
``os.system``, ``builtins.eval``, ``subprocess.Popen``, other numpy functions -- is refused with
:class:`UnsafePickleError`, naming the ``module.name`` that the pickle asked for.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from .base import DataError


class UnsafePickleError(DataError):
    """A pickle asked for a global outside the allow-list (the message names it)."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Stand-in for _codecs.encode: pickles only use it as encode(text, "latin1").
    try:
        codec = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        codec = None
    if codec != "iso8859-1":
        raise UnsafePickleError(
            f"refused _codecs.encode with codec {encoding!r} (only latin-1 is allowed)"
        )
    return codecs.encode(obj, "latin-1", errors)


def _numpy_global(submodule: str, name: str) -> object:
    import importlib

    try:
        mod = importlib.import_module(f"numpy._core.{submodule}")  # numpy >= 2
    except ImportError:  # numpy 1.x
        mod = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(mod, name)


def _resolve(module: str, name: str) -> object | None:
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
        return _numpy_global("multiarray", "_reconstruct")
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return _numpy_global("numeric", "_frombuffer")
    if module == "numpy" and name in ("ndarray", "dtype"):
        import numpy

        return getattr(numpy, name)
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    return None


# For documentation and tests: the (module, name) pairs that find_class admits.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> object:
        found = _resolve(module, name) if (module, name) in ALLOWED_GLOBALS else None
        if found is None:
            raise UnsafePickleError(
                f"refused to unpickle global '{module}.{name}' in {self._source}: only numpy "
                "arrays, containers, strings and numbers are allowed"
            )
        return found

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"refused persistent id {pid!r} in {self._source}")


def safe_load(file: str | os.PathLike[str] | IO[bytes], *, encoding: str = "ASCII") -> object:
    """Unpickle ``file`` (a path or a binary file object) admitting only numpy-array globals.

    ``encoding`` is as for ``pickle.load``: ``"bytes"`` reads Python 2 ``str`` as ``bytes`` (how
    the CIFAR pickles are usually read), ``"latin1"`` as ``str``. Refused globals raise
    :class:`UnsafePickleError`; a truncated or malformed pickle raises :class:`DataError`. Both
    messages name the file.
    """
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        try:
            with path.open("rb") as f:
                return safe_load(f, encoding=encoding)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    source = str(getattr(file, "name", "<stream>"))
    try:
        return _RestrictedUnpickler(file, source=source, encoding=encoding).load()
    except UnsafePickleError as exc:
        if source in str(exc):
            raise
        raise UnsafePickleError(f"{exc} in {source}") from None
    except EOFError:
        raise DataError(f"{source} is truncated (pickle data ended early)") from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        ImportError,
        struct.error,
        UnicodeDecodeError,
        io.UnsupportedOperation,
    ) as exc:
        msg = " ".join(str(exc).split())[:200]
        if isinstance(exc, pickle.UnpicklingError) and "truncated" in msg:
            raise DataError(f"{source} is truncated ({msg})") from None
        raise DataError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {msg})"
        ) from None


def str_keys(obj: object, source: object) -> dict[str, object]:
    """A pickled dict with its keys as str: Python 2 pickles read with ``encoding="bytes"`` give
    bytes keys (decoded as latin-1). A DataError naming ``source`` when it is not a dict."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):
            raise DataError(f"{source}: unexpected key {k!r} (expected str or bytes)")
        out[k] = v
    return out
