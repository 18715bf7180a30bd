"""Content-addressed images: hashing, safe path resolution, checks and loading bytes on demand.

Traces hold :class:`ImageRef` (hash plus path), never bytes or base64. Bytes are read only when a
tool or a backend needs them, and are not kept afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import time
from pathlib import Path

from mmat_core.errors import MmatError
from mmat_core.models import ImageRef

#: Images larger than this many pixels are refused before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000
#: Image files larger than this many bytes are refused before they are read.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Seconds one image file may take to read, from open to last byte (a slow network mount).
DEFAULT_READ_TIMEOUT_S = 30.0
#: Read size of :func:`read_regular_file`; the deadline is checked between chunks.
_READ_CHUNK = 1 << 20


class ImageError(MmatError, ValueError):
    """An image failed a check; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def read_regular_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                      timeout_s: float | None = DEFAULT_READ_TIMEOUT_S) -> bytes:
    """The bytes of the regular file at ``path``, or :class:`ImageError` with a quarantine reason.

    ``read_regular_file(path, max_bytes, timeout_s)`` is the one way mmat reads image bytes from
    disk (sources, the image store, tools, backends, the CLI, the viewer), because a path a dataset
    row names may be anything:

    * a directory, a FIFO, a socket or a device (``/dev/zero``, ``/dev/urandom``), directly or
      through a symlink: refused as ``image_not_a_file``. The path is ``stat``-ed first, so a
      device is never opened at all; it is then opened with ``O_NONBLOCK`` (a FIFO swapped in
      between cannot block the open, since a non-blocking read-open of a FIFO returns at once) and
      the opened descriptor is checked again with ``fstat``, so what is read is what was checked;
    * larger than ``max_bytes`` (by ``fstat``, and again while reading, for a file that grows):
      ``image_too_large``; at most ``max_bytes + 1`` bytes are ever held;
    * slower than ``timeout_s`` seconds in all (a stalled network mount): ``image_read_timeout``;
      the deadline is checked between 1 MiB reads, so a single read the kernel never returns from
      cannot be cut short in-process;
    * missing: ``image_missing``; unreadable (permissions, a symlink loop, an I/O error, a name
      with a NUL byte or a lone surrogate that no file can have): ``image_unreadable``.
    """
    name = os.fspath(path)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        before = os.stat(name)
    except FileNotFoundError:
        raise ImageError("image_missing", name) from None
    except OSError as exc:
        raise ImageError("image_unreadable", f"{name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise ImageError("image_unreadable", f"{name!r}: no file can have this name ({exc})") from None
    if not stat.S_ISREG(before.st_mode):
        raise ImageError("image_not_a_file", f"{name} is {_kind(before.st_mode)}, not a regular file")
    if before.st_size > max_bytes:
        raise ImageError("image_too_large", f"{before.st_size} bytes > {max_bytes}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise ImageError("image_missing", name) from None
    except OSError as exc:
        reason = "image_not_a_file" if exc.errno in (errno.EISDIR, errno.ENXIO) else "image_unreadable"
        raise ImageError(reason, f"{name}: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise ImageError("image_not_a_file", f"{name} is {_kind(opened.st_mode)}, not a regular file")
        if opened.st_size > max_bytes:
            raise ImageError("image_too_large", f"{opened.st_size} bytes > {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise ImageError("image_read_timeout", f"{name}: not read within {timeout_s:g} s")
            try:
                chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            except BlockingIOError:  # never for a regular file; kept so no path can spin
                raise ImageError("image_unreadable", f"{name}: the read would block") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ImageError("image_too_large", f"{name} grew past {max_bytes} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError("image_unreadable", f"{name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words, for the quarantine detail."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def resolve_within(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing anything that escapes it (``..``, absolute
    paths, symlinks pointing outside)."""
    root_resolved = root.resolve()
    try:
        candidate = (root_resolved / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        # A symlink loop (RuntimeError before Python 3.13, OSError after), a NUL byte or a name
        # the file system cannot encode (ValueError): the path names no file that could be read.
        raise ImageError("image_unreadable", f"{relative!r}: {exc}") from None
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise ImageError("path_escapes_root", f"{relative!r} resolves outside {root}")
    return candidate


def inspect_image(
    data: bytes,
    *,
    min_side: int = 1,
    max_side: int = 20_000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
) -> tuple[int, int, str]:
    """Check that ``data`` is a decodable image of acceptable size; return (width, height, format).

    The header is read first so a decompression bomb is refused before its pixels are decoded.
    """
    from PIL import Image

    if not data:
        raise ImageError("image_empty", "zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = img.format or "?"
            if width * height > max_pixels:
                raise ImageError("image_too_large", f"{width}x{height} exceeds {max_pixels} pixels")
            if formats and fmt.upper() not in formats:
                raise ImageError("image_format", f"{fmt} not in {', '.join(formats)}")
            if min(width, height) < min_side:
                raise ImageError("image_too_small", f"{width}x{height} < {min_side}")
            if max(width, height) > max_side:
                raise ImageError("image_too_large", f"{width}x{height} > {max_side} per side")
            img.load()  # full decode: catches truncated files
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("image_too_large", str(exc)) from None
    except Exception as exc:
        raise ImageError("image_corrupt", f"{type(exc).__name__}: {exc}") from None
    return width, height, fmt


def image_ref_from_bytes(data: bytes, path: str | None, *, check: bool = True, **limits: int) -> ImageRef:
    """An ImageRef for ``data`` (checked unless ``check`` is False)."""
    width = height = None
    fmt = None
    if check:
        width, height, fmt = inspect_image(data, **limits)  # type: ignore[arg-type]
    return ImageRef(sha256=sha256_bytes(data), path=path, width=width, height=height, format=fmt)


def image_ref_from_file(path: Path, *, check: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
                        timeout_s: float | None = DEFAULT_READ_TIMEOUT_S, **limits: int) -> ImageRef:
    """Read (through :func:`read_regular_file`), hash and check one image file; the bytes are
    dropped before returning."""
    data = read_regular_file(path, max_bytes, timeout_s)
    return image_ref_from_bytes(data, str(path), check=check, **limits)


class ImageStore:
    """Loads image bytes for a reference, from its path or from the run's blob folder.

    Images that arrive as bytes (e.g. embedded in parquet) are written once to
    ``blob_dir/<sha256[:2]>/<sha256>`` so that Traces can refer to them by path.
    """

    def __init__(self, blob_dir: Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 timeout_s: float | None = DEFAULT_READ_TIMEOUT_S) -> None:
        self.blob_dir = blob_dir
        #: Limits of every read (see :func:`read_regular_file`).
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def put(self, data: bytes, suffix: str = "") -> ImageRef:
        """Store bytes by content and return their reference (no check)."""
        digest = sha256_bytes(data)
        if self.blob_dir is None:
            raise RuntimeError("ImageStore has no blob directory to store bytes in")
        target = self.blob_dir / digest[:2] / f"{digest}{suffix}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return ImageRef(sha256=digest, path=str(target))

    def load(self, ref: ImageRef) -> bytes:
        """The bytes of ``ref`` (read through :func:`read_regular_file`); raises ImageError when
        they are gone, changed, or no longer a regular file of acceptable size."""
        if ref.path:
            try:
                data = read_regular_file(ref.path, self.max_bytes, self.timeout_s)
            except ImageError as exc:
                if exc.reason != "image_missing":
                    raise
            else:
                if sha256_bytes(data) != ref.sha256:
                    raise ImageError("image_changed", f"{ref.path} no longer matches its hash")
                return data
        for candidate in self.blob_paths(ref.sha256):
            data = read_regular_file(candidate, self.max_bytes, self.timeout_s)
            if sha256_bytes(data) != ref.sha256:
                raise ImageError("image_changed", f"{candidate} no longer matches its hash")
            return data
        raise ImageError("image_missing", ref.path or ref.sha256)

    def blob_paths(self, sha256: str) -> list[Path]:
        """The files of the blob folder that hold the bytes of ``sha256`` (any suffix), in name
        order; none without a blob folder or for a value that is not a SHA-256 (never a pattern)."""
        if self.blob_dir is None or not _is_sha256(sha256):
            return []
        return sorted((self.blob_dir / sha256[:2]).glob(f"{sha256}*"))


def _is_sha256(value: str) -> bool:
    """Whether ``value`` is 64 lower-case hex digits (so it can name a blob, never a path)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
