"""Atomic, streaming output files.

Every output is written to a hidden temporary file beside its target, flushed, fsynced and then
renamed into place. A crash leaves at most a ``.name.tmp`` file, never a half file under the
real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mmat_core.models import Trace


class AtomicFile:
    """A text file that appears under its name only when closed successfully."""

    def __init__(self, path: Path, mode: str = "w") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._fh: IO[Any] = open(self.tmp, mode, encoding=None if "b" in mode else "utf-8")

    @property
    def handle(self) -> IO[Any]:
        """The underlying file object."""
        return self._fh

    def write(self, data: Any) -> None:
        """Write to the temporary file."""
        self._fh.write(data)

    def commit(self) -> Path:
        """Flush, fsync and rename into place."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write one JSON document atomically."""
    with AtomicFile(path) as out:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def dumps_line(record: dict[str, Any]) -> str:
    """One JSON Lines line (UTF-8 kept readable)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class RecordWriter:
    """Streams one JSON object per kept trace into an atomically published JSONL file."""

    def __init__(self, path: Path, make_record: Callable[[Trace], dict[str, Any] | None]) -> None:
        self.path = path
        self.make_record = make_record
        self._file = AtomicFile(path)
        self.count = 0

    def write(self, trace: Trace) -> None:
        """Format and write one trace if it is kept."""
        if not trace.kept:
            return
        record = self.make_record(trace)
        if record is not None:
            self._file.write(dumps_line(record))
            self.count += 1

    def close(self) -> list[Path]:
        """Publish the file."""
        return [self._file.commit()]

    def abort(self) -> None:
        """Discard the partial file."""
        self._file.abort()
