"""Atomic, streaming output files.

Every output is written to a hidden temporary file beside its target, flushed, fsynced and then
renamed into place. A crash leaves at most a ``.name.tmp`` file, never a half file under the
real name. Writers hold one record at a time, so memory stays flat however many samples pass.

Records are serialised with orjson when it is installed (about ten times faster than the standard
library) and with :mod:`json` otherwise; for the string-only records mmat writes the two produce
the same bytes, which a test checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mmat_core.models import KEPT_STATUSES, Rejected, Trace
from mmat_core.secrets import scrub

try:  # orjson is optional: the fallback writes identical bytes, only slower.
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _orjson = None

#: Trace statuses that go into training data (mirrors :attr:`mmat_core.models.Trace.kept`).

#: Bytes buffered before a write reaches the operating system.
BUFFER_BYTES = 1 << 20


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.name.<pid>.tmp`` files that a killed writer of ``path`` left behind (their
    process is gone); a live writer's file is left alone."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        pid = leftover.name[len(path.name) + 2 : -4]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


class AtomicFile:
    """A file that appears under its name only when committed successfully.

    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"`` (bytes); writes are buffered.
    """

    def __init__(self, path: Path, mode: str = "w") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        remove_stale_temporaries(path)
        binary = "b" in mode
        self._fh: IO[Any] = open(self.tmp, mode, buffering=BUFFER_BYTES, encoding=None if binary else "utf-8")

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
    """Write one JSON document atomically (indented, for files people read)."""
    with AtomicFile(path) as out:
        out.write(scrub(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")  # run.json never holds a key
    return path


def dumps_bytes(record: Mapping[str, Any]) -> bytes:
    """One compact JSON document as UTF-8 bytes (no newline), non-ASCII kept readable."""
    if _orjson is not None:
        return _orjson.dumps(record)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dumps_line(record: Mapping[str, Any]) -> str:
    """One JSON Lines line (UTF-8 kept readable)."""
    return dumps_bytes(record).decode("utf-8") + "\n"


def loads(data: bytes | str) -> Any:
    """Parse one JSON document (orjson when installed)."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


def is_kept(trace: Trace | Mapping[str, Any]) -> bool:
    """Whether a trace (model or stored JSON dict) goes into the training data."""
    status = trace.status if isinstance(trace, Trace) else trace.get("status", "kept")
    return status in KEPT_STATUSES


def trace_id(trace: Trace | Mapping[str, Any]) -> str:
    """The id of a trace given as a model or as its stored JSON dict."""
    return trace.id if isinstance(trace, Trace) else str(trace["id"])


class SkipTrace(Exception):
    """Raised by a record function to leave one trace out of an export, with a reason.

    The writer turns it into a :class:`mmat_core.models.Rejected` row (stage ``format:<name>``)
    instead of failing the whole export.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def validation_bucket(sample_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the sample id and the salt: the train/val split key.

    Hash-based, so a sample lands in the same split however the data is ordered, sharded or
    re-exported, and adding samples never moves existing ones.
    """
    digest = hashlib.blake2b(f"{salt}\x00{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_validation(sample_id: str, ratio: float, salt: str) -> bool:
    """Whether ``sample_id`` belongs to the validation split at ``ratio``."""
    return ratio > 0 and validation_bucket(sample_id, salt) < ratio


RecordFunction = Callable[[Any], "Mapping[str, Any] | None"]


class _Quarantine:
    """Collects traces a formatter left out, with reasons."""

    def __init__(self, formatter: str) -> None:
        self.formatter = formatter
        self.rejected: list[Rejected] = []

    def add(self, trace: Any, skip: SkipTrace) -> None:
        source = trace.sample.source if isinstance(trace, Trace) else str(trace.get("sample", {}).get("source", ""))
        self.rejected.append(
            Rejected(source=source, row=trace_id(trace), reason=skip.reason, detail=skip.detail,
                     stage=f"format:{self.formatter}")
        )


class RecordWriter:
    """Streams one JSON object per kept trace into an atomically published JSONL file.

    ``make_record`` receives whatever :meth:`write` is given (a :class:`Trace`, or its stored
    JSON dict when the formatter declares ``accepts_dicts``) and returns the record or None.
    """

    def __init__(self, path: Path, make_record: RecordFunction, *, formatter: str = "") -> None:
        self.path = path
        self.make_record = make_record
        self._file = AtomicFile(path, "wb")
        self._write = self._file.handle.write
        self.count = 0
        self.quarantine = _Quarantine(formatter or path.stem)

    @property
    def rejected(self) -> list[Rejected]:
        """Traces left out, with their reasons."""
        return self.quarantine.rejected

    def write(self, trace: Any) -> None:
        """Format and write one trace if it is kept."""
        if not is_kept(trace):
            return
        try:
            record = self.make_record(trace)
        except SkipTrace as skip:
            self.quarantine.add(trace, skip)
            return
        if record is not None:
            self._emit(dumps_bytes(record))
            self.count += 1

    def _emit(self, encoded: bytes) -> None:
        """Append one encoded record (a JSON Lines line here)."""
        self._write(encoded + b"\n")

    def close(self) -> list[Path]:
        """Publish the file."""
        return [self._file.commit()]

    def abort(self) -> None:
        """Discard the partial file."""
        self._file.abort()


class JsonArrayWriter(RecordWriter):
    """Streams records into one JSON array (``[`` record ``,`` record ... ``]``), one per line.

    For consumers such as LLaVA that read a single JSON document: the array is written as it
    goes, so memory stays flat however many records there are.
    """

    def __init__(self, path: Path, make_record: RecordFunction, *, formatter: str = "") -> None:
        super().__init__(path, make_record, formatter=formatter)
        self._write(b"[")

    def _emit(self, encoded: bytes) -> None:
        """Append one element of the array."""
        self._write((b"\n" if self.count == 0 else b",\n") + encoded)

    def close(self) -> list[Path]:
        """Close the array and publish the file."""
        self._write(b"\n]\n" if self.count else b"]\n")
        return super().close()


class SplitWriter:
    """Routes each trace to a train or a validation writer by the hash of its sample id."""

    def __init__(self, train: RecordWriter, val: RecordWriter, ratio: float, salt: str) -> None:
        self.train = train
        self.val = val
        self.ratio = ratio
        self.salt = salt

    @property
    def rejected(self) -> list[Rejected]:
        """Traces left out by either writer."""
        return self.train.rejected + self.val.rejected

    @property
    def count(self) -> int:
        """Records written to both files."""
        return self.train.count + self.val.count

    def write(self, trace: Any) -> None:
        """Write one trace into its split."""
        if not is_kept(trace):
            return
        target = self.val if in_validation(trace_id(trace), self.ratio, self.salt) else self.train
        target.write(trace)

    def close(self) -> list[Path]:
        """Publish both files (train first)."""
        return self.train.close() + self.val.close()

    def abort(self) -> None:
        """Discard both partial files."""
        self.train.abort()
        self.val.abort()


def write_all(writers: Iterable[Any], traces: Iterable[Any]) -> list[list[Path]]:
    """Stream ``traces`` through every writer; on any error abort them all, else publish all."""
    writers = list(writers)
    try:
        for trace in traces:
            for writer in writers:
                writer.write(trace)
        return [writer.close() for writer in writers]
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
