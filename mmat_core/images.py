"""Content-addressed images: hashing, safe path resolution, checks and loading bytes on demand.

Traces hold :class:`ImageRef` (hash plus path), never bytes or base64. Bytes are read only when a
tool or a backend needs them, and are not kept afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from mmat_core.models import ImageRef

#: Images larger than this many pixels are refused before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


class ImageError(ValueError):
    """An image failed a check; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def resolve_within(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing anything that escapes it (``..``, absolute
    paths, symlinks pointing outside)."""
    root_resolved = root.resolve()
    candidate = (root_resolved / relative).resolve()
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


def image_ref_from_file(path: Path, *, check: bool = True, max_bytes: int = DEFAULT_MAX_BYTES, **limits: int) -> ImageRef:
    """Read, hash and check one image file; the bytes are dropped before returning."""
    if not path.exists():
        raise ImageError("image_missing", str(path))
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageError("image_too_large", f"{size} bytes > {max_bytes}")
    data = path.read_bytes()
    return image_ref_from_bytes(data, str(path), check=check, **limits)


class ImageStore:
    """Loads image bytes for a reference, from its path or from the run's blob folder.

    Images that arrive as bytes (e.g. embedded in parquet) are written once to
    ``blob_dir/<sha256[:2]>/<sha256>`` so that Traces can refer to them by path.
    """

    def __init__(self, blob_dir: Path | None = None) -> None:
        self.blob_dir = blob_dir

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
        """The bytes of ``ref``; raises ImageError when they are gone or changed."""
        if ref.path:
            path = Path(ref.path)
            if path.exists():
                data = path.read_bytes()
                if sha256_bytes(data) != ref.sha256:
                    raise ImageError("image_changed", f"{ref.path} no longer matches its hash")
                return data
        if self.blob_dir is not None:
            for candidate in (self.blob_dir / ref.sha256[:2]).glob(f"{ref.sha256}*"):
                return candidate.read_bytes()
        raise ImageError("image_missing", ref.path or ref.sha256)
