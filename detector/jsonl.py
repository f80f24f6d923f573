"""JSON lines in and out, for every offline command: written byte-identically for the same records
(gzip with mtime 0), read back line by line; a file that cannot be read or written raises
DataError naming it.

    n = write_jsonl(records, "out.jsonl.gz")      # or "-" for stdout
    for line in read_jsonl("in.jsonl.gz"): ...     # raw bytes, one event each
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from detector.exceptions import DataError


def writable_dir(path: str | Path) -> Path:
    """`path` as a folder this process can write in (created with its parents), or DataError."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{p}: cannot write ({exc.strerror or exc})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise DataError(f"{p}: cannot write (Permission denied)")
    return p


def open_out(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    p = Path(path)
    try:
        writable_dir(p.parent)
        f = open(p, "wb")  # noqa: SIM115
    except DataError:
        raise DataError(f"{p}: cannot write (its folder {p.parent} cannot be created or written)") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot write ({exc.strerror or exc})") from None
    if p.name.endswith(".gz"):
        return gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0)  # type: ignore[return-value]
    return f


def write_jsonl(records: Iterable[dict[str, Any]], path: str) -> int:
    out = open_out(path)
    n = 0
    try:
        buf: list[bytes] = []
        for rec in records:
            buf.append(orjson.dumps(rec))
            n += 1
            if len(buf) >= 10_000:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            out.write(b"\n".join(buf) + b"\n")
    finally:
        if path != "-":
            fileobj = getattr(out, "fileobj", None)
            out.close()
            if fileobj is not None:
                fileobj.close()
        else:
            out.flush()
    return n


def read_jsonl(path: str | Path) -> Iterator[bytes]:
    """Raw lines (without newline) of a .jsonl or .jsonl.gz file. A file that is missing, not a
    file, or not readable (a truncated or corrupt .gz) raises DataError naming it."""
    p = Path(path)
    opener = gzip.open if p.name.endswith(".gz") else open
    try:
        with opener(p, "rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line:
                    yield line
    except (OSError, EOFError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataError(f"{p}: cannot read ({reason})") from None
