"""sha256 of what preparation reads: whole files, and streams hashed as they are read."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


class HashingReader:
    """A read-only binary stream that hashes every byte read through it (for tarfile, pickle)."""

    def __init__(self, raw: IO[bytes], name: str = "<stream>") -> None:
        self.raw, self.name, self.sha = raw, name, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.sha.update(memoryview(buffer)[:n])
        return n

    def readline(self, size: int = -1) -> bytes:
        data = self.raw.readline(size)
        self.sha.update(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of the whole stream: what was not read yet is read (and hashed) first."""
        while self.read(CHUNK):
            pass
        return self.sha.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
