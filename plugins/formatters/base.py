"""What the built-in exports share: image paths and bytes, tags, side files, the view's system prompt.

The formatter base class they build on, :class:`~mmat_core.ViewFormatter`, its options and the
train/val split live in the core (:mod:`mmat_core.authoring.formatters`), importable by any plugin
from :mod:`mmat_core`.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmat_core import ConfigError, FormatContext, SkipTrace
from mmat_core.writers import write_json_atomic

# ---- helpers shared by the exports ------------------------------------------------------------


def relative_image_path(path: str, image_root: str | None) -> str:
    """``path`` relative to ``image_root`` when it lies inside it, else unchanged."""
    if not image_root:
        return path
    root = os.path.abspath(image_root)
    absolute = os.path.abspath(path)
    if absolute == root or not absolute.startswith(root.rstrip(os.sep) + os.sep):
        return path
    return os.path.relpath(absolute, root)


def export_images(data: Mapping[str, Any], image_root: str | None) -> list[str]:
    """The sample's image paths as an export writes them."""
    return [relative_image_path(image.get("path") or image["sha256"], image_root)
            for image in data["sample"].get("images") or ()]


def tag_first_user(messages: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    """Messages with ``prefix`` (image tags) put before the first user turn's text."""
    if not prefix:
        return messages
    tagged = list(messages)
    for i, message in enumerate(tagged):
        if message["role"] == "user":
            tagged[i] = {"role": "user", "content": prefix + message["content"]}
            break
    return tagged


def image_bytes(image: Mapping[str, Any], ctx: FormatContext, image_root: str | None = None) -> tuple[bytes, str]:
    """The bytes and MIME type of one image of a trace, or :class:`SkipTrace` with the reason.

    Looks at the recorded path (relative paths against ``image_root`` or the context's image root),
    then in the run's image store (``ctx.images``) by content hash. A recorded hash is checked.
    """
    from mmat_core.images import ImageError, read_regular_file, sha256_bytes

    path = image.get("path")
    sha = image.get("sha256") or ""
    candidates: list[Path] = []
    if path:
        candidates.append(Path(path))
        for root in (image_root, ctx.image_root):
            if root and not os.path.isabs(path):
                candidates.append(Path(root) / path)
    if sha and ctx.images is not None:
        candidates.extend(ctx.images.blob_paths(sha))
    for candidate in candidates:
        if candidate.is_file():
            try:  # the one safe reader: regular files only, size-capped (see read_regular_file)
                data = read_regular_file(candidate)
            except ImageError as exc:
                raise SkipTrace(exc.reason, exc.detail) from None
            if sha and sha256_bytes(data) != sha:
                raise SkipTrace("image_changed", f"{candidate} no longer matches its recorded hash")
            mime = _mime(image.get("format"), candidate.name)
            return data, mime
    raise SkipTrace("image_missing", f"{path or sha}: not found (set image_root or keep the run's images folder)")


def _mime(pil_format: str | None, name: str) -> str:
    if pil_format:
        return f"image/{pil_format.lower().replace('jpg', 'jpeg')}"
    guess, _ = mimetypes.guess_type(name)
    return guess or "application/octet-stream"


def data_url(data: bytes, mime: str) -> str:
    """A ``data:`` URL holding the bytes in base64."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def merge_json_entry(path: Path, key: str, entry: dict[str, Any]) -> Path:
    """Add or replace ``key`` in the JSON object at ``path`` (created if absent), atomically."""
    import json

    document: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid JSON ({exc}); fix or remove it before exporting", file=str(path)) from None
        if isinstance(loaded, dict):
            document = loaded
    document[key] = entry
    return write_json_atomic(path, document)


def ensure(condition: bool, reason: str, detail: str) -> None:
    """Leave the trace out with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise SkipTrace(reason, detail)


def view_system(view: str, ctx: FormatContext) -> str:
    """The system prompt of a view for this run (an imported run may carry its RR prompt verbatim)."""
    from mmat_core import prompts

    if view == "rr":
        return ctx.rr_system or prompts.rr_system(ctx.tools, ctx.rag_enabled)
    return prompts.orr_system()
