"""Re-export a finished run into any format from its stored Traces, without a model call.

``export_run(run_dir, ["ms_swift", "rr"], out_dir)`` reads the run store in ``seq`` order and
streams every Trace through the chosen formatters. The formatter context (enabled tools, whether
retrieval was on) comes from the run itself, so a re-export writes the same RR system prompt the
build wrote.

Speed: formatters that declare ``accepts_dicts`` (all built-ins) get each Trace as the JSON dict
parsed by orjson, with no pydantic validation: the store's rows were validated when written, and
the dict path produces the same bytes as the model path (a test checks this). Formatters from
third parties get validated :class:`~mmat_core.models.Trace` objects as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat_core.components import FormatContext, Formatter, ToolInfo
from mmat_core.errors import ConfigError, MmatError
from mmat_core.images import ImageStore
from mmat_core.models import TRACE_SCHEMA_VERSION, Rejected, RunManifest, Trace, Usage
from mmat_core.store import RunStore
from mmat_core.writers import AtomicFile, dumps_line, loads, write_all

log = logging.getLogger("mmat.export")

#: Run-store metadata key holding the formatter context a run was (or would be) formatted with.
FORMAT_CONTEXT_KEY = "format_context"
#: Where traces left out by an export are listed, with reasons.
EXPORT_QUARANTINE = "export_quarantine.jsonl"


@dataclass
class ExportResult:
    """What an export wrote."""

    out_dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    traces: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: The formatters that wrote ``files`` (with the options they ran with).
    formatters: list[Formatter] = field(default_factory=list)


def context_to_meta(ctx: FormatContext) -> dict[str, Any]:
    """The JSON kept in the run store for a formatter context."""
    meta: dict[str, Any] = {
        "tools": [{"name": t.name, "label": t.label, "description": t.description} for t in ctx.tools],
        "rag_enabled": ctx.rag_enabled,
    }
    if ctx.rr_system:
        meta["rr_system"] = ctx.rr_system
    return meta


def context_from_meta(meta: dict[str, Any]) -> FormatContext:
    """A formatter context from its stored JSON."""
    ctx = FormatContext(tools=[ToolInfo(**tool) for tool in meta.get("tools", [])], rag_enabled=bool(meta.get("rag_enabled", True)))
    if meta.get("rr_system"):
        ctx.rr_system = str(meta["rr_system"])
    return ctx


def context_from_config(config: dict[str, Any], plugins: Any = None) -> FormatContext:
    """The formatter context a build with ``config`` had: tool names, labels and descriptions come
    from the installed tool plugins, retrieval is on when the config names a search backend."""
    from mmat_core.config import PipelineConfig
    from mmat_core.plugins import get_plugin_manager

    cfg = PipelineConfig.model_validate(config)
    manager = plugins or get_plugin_manager()
    tools = []
    for spec in cfg.tools:
        try:
            cls = manager.get("tool", spec.name)
        except ConfigError as exc:
            raise ConfigError(f"the run's config enables tool {spec.name!r}, which is not installed ({exc}); "
                              "install its plugin so the RR system prompt can list it", key="tools") from None
        tools.append(ToolInfo(name=cls.name, label=cls.result_label(), description=cls.description))
    return FormatContext(tools=tools, rag_enabled=cfg.search is not None)


def run_format_context(store: RunStore, run_dir: Path, plugins: Any = None) -> FormatContext:
    """The formatter context of a stored run.

    The context recorded when the run was formatted (by ``mmat build`` or ``mmat import-rr``) wins,
    because it holds the exact operator descriptions the data was written with; older runs fall
    back to the stored config (``meta.config``) resolved through the installed plugins.
    """
    meta = store.get_meta(FORMAT_CONTEXT_KEY)
    if meta:
        ctx = context_from_meta(meta)
    else:
        config = store.get_meta("config")
        if config is None:
            raise ConfigError("the run store holds neither a config nor a format context; "
                              "was it written by `mmat build` or `mmat import-rr`?", file=str(store.path))
        ctx = context_from_config(config, plugins)
    ctx.run_dir = run_dir
    ctx.images = ImageStore(run_dir / "images")
    ctx.manifest = read_manifest(run_dir)
    return ctx


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The run's ``run.json``, or None when it has none or it is not a manifest (a run that never
    finished, a file written by hand): an export then goes on without it."""
    path = run_dir / "run.json"
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        log.warning("%s is not a readable run manifest (%s); exporting without it", path, exc)
        return None


def open_store(run_dir: Path) -> RunStore:
    """The run store of ``run_dir``; a clear error when there is none (never creates one)."""
    return RunStore.open_existing(run_dir, hint="give the folder `mmat build --out` or `mmat import-rr --out` wrote")


def view_decoder() -> Callable[[bytes], dict[str, Any]]:
    """A function from a stored trace's JSON to its *view dict*: the Trace JSON restricted to the
    keys formatters read (see ``TraceView``).

    With msgspec installed the decoder skips every other key (tool data, model calls, hits,
    timings, verdicts) without building Python objects for them, which is where the time of
    parsing a stored trace goes; without it, orjson parses the whole document.
    """
    try:
        import msgspec
    except ImportError:  # pragma: no cover - msgspec is a core dependency; this keeps a broken env working
        return loads
    from mmat_core.trace_view import TraceView

    return msgspec.json.Decoder(TraceView).decode


def iter_stored(store: RunStore, *, models: bool, dicts: bool, status: str | None = None,
                start: int = 0, stop: int | None = None, full: bool = False) -> Iterator[tuple[Any, Any]]:
    """(view dict, model) per stored trace; each is None unless asked for. The dict path skips
    validation unless the trace was written with another layout version, in which case it is
    validated (and migrated by the model) first. ``full`` gives the whole JSON dict rather than
    the formatters' view (the yield counts read verdicts and notes too)."""
    decode = loads if (models or full) else view_decoder()
    for raw in store.trace_json(status=status, start=start, stop=stop):
        data = decode(raw)
        model = None
        if models or data.get("schema_version") != TRACE_SCHEMA_VERSION:
            model = Trace.model_validate_json(raw)
            if dicts and data.get("schema_version") != TRACE_SCHEMA_VERSION:
                data = model.model_dump(mode="json")
        yield (data if dicts else None), model


class _Feed:
    """Gives each writer the form its formatter accepts."""

    def __init__(self, formatter: Formatter, writer: Any) -> None:
        self.writer = writer
        self.dicts = formatter.accepts_dicts

    def write(self, item: tuple[Any, Any]) -> None:
        self.writer.write(item[0] if self.dicts else item[1])

    def close(self) -> list[Path]:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _usage_of(data: dict[str, Any] | None, model: Trace | None) -> Usage:
    if model is not None:
        return model.usage
    return Usage.model_construct(**(data or {}).get("usage", {}))


def write_formats(formatters: Sequence[Formatter], items: Iterable[tuple[Any, Any]], out_dir: Path,
                  ctx: FormatContext, *, sum_usage: bool = False) -> ExportResult:
    """Stream (dict, model) pairs through the formatters into ``out_dir``; all or nothing is published."""
    result = ExportResult(out_dir)
    feeds: list[_Feed] = []
    try:
        for formatter in formatters:
            feeds.append(_Feed(formatter, formatter.open(out_dir, ctx)))
    except BaseException:
        for feed in feeds:
            feed.abort()
        raise

    def counted() -> Iterator[tuple[Any, Any]]:
        for item in items:
            result.traces += 1
            if sum_usage:
                result.usage.add(_usage_of(*item))
            yield item

    published = write_all(feeds, counted())
    result.formatters = list(formatters)
    for formatter, feed, files in zip(formatters, feeds, published):
        result.files[formatter.name] = files
        result.rejected.extend(getattr(feed.writer, "rejected", []))
    return result


def resolve_formatters(names: Sequence[str | dict[str, Any] | Formatter], plugins: Any = None) -> list[Formatter]:
    """Formatter components from names, ``{"name": ..., **options}`` dicts or ready objects."""
    from pydantic import ValidationError

    from mmat_core.config import ComponentSpec, validation_error
    from mmat_core.plugins import get_plugin_manager

    manager = plugins or get_plugin_manager()
    out: list[Formatter] = []
    for i, item in enumerate(names):
        if isinstance(item, Formatter):
            out.append(item)
            continue
        spec = ComponentSpec(name=item) if isinstance(item, str) else ComponentSpec.model_validate(item)
        cls = manager.get("formatter", spec.name)
        try:
            out.append(cls(cls.Options(**spec.options)))  # type: ignore[arg-type]
        except ValidationError as exc:
            raise validation_error(exc, cls.Options, None, prefix=f"formats[{i}].") from None
    return out


#: Below this many stored traces an export stays in one process (starting workers costs more).
PARALLEL_MIN_TRACES = 20_000


def export_run(run_dir: str | Path, formats: Sequence[str | dict[str, Any] | Formatter], out_dir: str | Path | None = None,
               *, status: str | None = None, plugins: Any = None, workers: int = 1) -> ExportResult:
    """Write ``formats`` from the Traces stored in ``run_dir`` into ``out_dir`` (default: the run
    directory). No model is called. Traces a formatter cannot export are listed with their reason
    in ``export_quarantine.jsonl``.

    ``workers > 1`` splits the store by ``seq`` into that many contiguous ranges, formats each in
    its own process into part files and joins the parts in order: the output is byte-identical to
    a one-process export. It applies when every formatter is line-oriented (``parallel_safe``)
    and the run holds at least ``PARALLEL_MIN_TRACES`` traces.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    formatters = resolve_formatters(formats, plugins)
    store = open_store(run_dir)
    try:
        ctx = run_format_context(store, run_dir, plugins)
        parallel = (workers > 1 and all(f.parallel_safe for f in formatters)
                    and store.count() >= PARALLEL_MIN_TRACES)
        if parallel:
            bounds = store.seq_bounds()
        else:
            models = any(not f.accepts_dicts for f in formatters)
            dicts = any(f.accepts_dicts for f in formatters)
            result = write_formats(formatters, iter_stored(store, models=models, dicts=dicts, status=status), out, ctx)
    finally:
        store.close()
    if parallel:
        result = export_parallel(run_dir, formatters, out, status, bounds, workers)
        result.formatters = list(formatters)
    if result.rejected:
        write_rejected(out / EXPORT_QUARANTINE, result.rejected)
    return result


def write_rejected(path: Path, rows: Iterable[Rejected]) -> Path:
    """Write quarantined rows as JSON Lines, atomically."""
    with AtomicFile(path) as fh:
        for row in rows:
            fh.write(dumps_line(row.model_dump(mode="json")))
    return path


def _export_part(run_dir: str, formatters: list[Formatter], part_dir: str, status: str | None,
                 start: int, stop: int, ctx: FormatContext | None = None) -> tuple[dict[str, list[str]], int, list[dict[str, Any]]]:
    """Worker: export traces with ``start < seq <= stop`` into ``part_dir``."""
    store = RunStore.open(Path(run_dir))
    try:
        ctx = ctx or run_format_context(store, Path(run_dir))
        items = iter_stored(store, models=False, dicts=True, status=status, start=start, stop=stop)
        result = write_formats(formatters, items, Path(part_dir), ctx)
    finally:
        store.close()
    files = {name: [str(p) for p in paths] for name, paths in result.files.items()}
    return files, result.traces, [r.model_dump(mode="json") for r in result.rejected]


def append_file(source: Any, sink: Any) -> None:
    """Append ``source`` to ``sink`` (both open binary files): in the kernel where the platform
    can (``copy_file_range``), else through a buffer."""
    import shutil

    sink.flush()
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(source.fileno(), sink.fileno(), 1 << 30):
                pass
            return
        except OSError:  # a file system without it: fall back, from where the kernel stopped
            sink.seek(0, os.SEEK_END)
    shutil.copyfileobj(source, sink, 1 << 22)


def export_parallel(run_dir: Path, formatters: list[Formatter], out: Path, status: str | None,
                    bounds: tuple[int, int], workers: int, ctx: FormatContext | None = None) -> ExportResult:
    """Format seq ranges in worker processes, then join the part files in order, atomically
    (``ctx``: the formatter context to use, default the run's stored one). Every formatter must
    be ``parallel_safe``; the files are byte-identical to a one-process export."""
    import multiprocessing
    import shutil
    import tempfile

    low, high = bounds
    edges = [low - 1 + round((high - low + 1) * k / workers) for k in range(workers + 1)]
    out.mkdir(parents=True, exist_ok=True)
    parts_root = Path(tempfile.mkdtemp(prefix=".export-parts-", dir=out))
    result = ExportResult(out)
    try:
        jobs = [(str(run_dir), formatters, str(parts_root / f"part{k}"), status, edges[k], edges[k + 1], ctx)
                for k in range(workers)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.starmap(_export_part, jobs)
        for formatter in formatters:
            joined: list[Path] = []
            for index, first in enumerate(parts[0][0][formatter.name]):
                # The first part (already complete and synced, beside the target on the same file
                # system) becomes the file: the others are appended in the kernel, synced, and the
                # whole is renamed into place, so the bytes are copied once, not twice.
                with open(first, "r+b") as sink:  # not "ab": copy_file_range refuses O_APPEND
                    sink.seek(0, os.SEEK_END)
                    for files, _, _ in parts[1:]:
                        with open(files[formatter.name][index], "rb") as part:
                            append_file(part, sink)
                    sink.flush()
                    os.fsync(sink.fileno())
                target = out / Path(first).name
                os.replace(first, target)
                joined.append(target)
            result.files[formatter.name] = joined
        for _, traces, rejected in parts:
            result.traces += traces
            result.rejected.extend(Rejected.model_validate(r) for r in rejected)
    finally:
        shutil.rmtree(parts_root, ignore_errors=True)
    return result


# ---- bundles: rows + the images they use + card + manifest, in one folder --------------------

#: The bundle's manifest (what is in it, with sizes and hashes, and how each consumer loads it).
BUNDLE_MANIFEST = "manifest.json"
#: Where a bundle keeps its images, content-addressed (``images/ab/<sha256>.<ext>``).
BUNDLE_IMAGES = "images"
BUNDLE_LAYOUT_VERSION = 1
_IMAGE_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


def _bundle_specs(formats: Sequence[str | dict[str, Any] | Formatter], bundle_dir: Path,
                  plugins: Any) -> list[dict[str, Any] | Formatter]:
    """The formats of a bundle: every image path relative to the bundle folder, the Hugging Face
    dataset (added when not asked for) written at the bundle's root with its images embedded,
    so ``datasets.load_dataset(DIR)`` reads it by its card."""
    from mmat_core.plugins import get_plugin_manager

    manager = plugins or get_plugin_manager()
    specs: list[dict[str, Any] | Formatter] = []
    views: list[str] = []
    for item in formats:
        if isinstance(item, Formatter):
            specs.append(item)
            continue
        spec = {"name": item} if isinstance(item, str) else dict(item)
        fields = manager.get("formatter", spec["name"]).Options.model_fields
        if spec.get("image_root"):
            raise ConfigError(f"a bundle writes image paths relative to itself; remove image_root from {spec['name']}",
                              key="image_root")
        if "image_root" in fields:
            spec["image_root"] = str(bundle_dir)
        if "view" in fields:
            views.append(spec.get("view", "rr"))
        if spec["name"] == "hf_dataset":
            if spec.get("images", "embed") != "embed":
                raise ConfigError("a bundle's hf_dataset embeds its images (images=path would not travel)", key="images")
            spec["file"] = "."
        if spec["name"] == "internvl":
            spec["meta_paths"] = "relative"
        specs.append(spec)
    named = [s for s in specs if isinstance(s, dict) and s["name"] == "hf_dataset"]
    if len(named) > 1:
        raise ConfigError("a bundle holds one hf_dataset (its card is the bundle's README.md); give one view")
    if not named:
        specs.append({"name": "hf_dataset", "file": ".", "view": views[0] if views else "rr", "image_root": str(bundle_dir)})
    return specs


class _Bundler:
    """Copies each kept trace's images into the bundle by content and points the trace at them."""

    def __init__(self, bundle_dir: Path, ctx: FormatContext) -> None:
        self.store = ImageStore(bundle_dir / BUNDLE_IMAGES)
        self.source = ctx.images or ImageStore(None)
        self.copied: dict[str, Path] = {}
        self.rejected: list[Rejected] = []

    def _copy(self, image: dict[str, Any]) -> str:
        from mmat_core.models import ImageRef

        sha = image["sha256"]
        if sha not in self.copied:
            data = self.source.load(ImageRef.model_construct(sha256=sha, path=image.get("path")))
            self.copied[sha] = Path(self.store.put(data, _image_suffix(image)).path or "")
        return str(self.copied[sha])

    def rewrite(self, items: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        """The items with image paths into the bundle; a kept trace whose image cannot be read
        is left out (listed with its reason) rather than written with a path that leads nowhere."""
        from mmat_core.images import ImageError
        from mmat_core.writers import is_kept

        for data, model in items:
            kept = is_kept(data if data is not None else model)
            images = (data["sample"].get("images") if data is not None else
                      [i.model_dump() for i in model.sample.images]) or []
            if kept and images:
                try:
                    paths = [self._copy(image) for image in images]
                except ImageError as exc:
                    sample = data["sample"] if data is not None else model.sample.model_dump()
                    self.rejected.append(Rejected(source=sample["source"], row=data["id"] if data is not None else model.id,
                                                  reason=exc.reason, detail=exc.detail, stage="bundle"))
                    continue
                if data is not None:
                    data["sample"]["images"] = [{**image, "path": path} for image, path in zip(images, paths)]
                if model is not None:
                    model = model.model_copy(deep=True)
                    for ref, path in zip(model.sample.images, paths):
                        ref.path = path
            yield data, model


def _image_suffix(image: dict[str, Any]) -> str:
    """The blob's file suffix: from the image's format, else its source name's suffix when that
    is a plain short extension (a hostile name cannot put a newline, a slash or 200 characters
    into the bundle's file names), else none."""
    import re

    known = _IMAGE_SUFFIXES.get(str(image.get("format") or "").upper())
    if known:
        return known
    suffix = Path(str(image.get("path") or "")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": _sha256_file(path)}


def _kind_of(path: Path) -> str:
    import stat

    mode = path.lstat().st_mode
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a file")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_bundle_dir(bundle: Path, run_dir: Path, *, force: bool = False) -> list[str]:
    """Refuse a ``--bundle`` folder that cannot or must not receive a bundle; returns the names
    already in it (written beside, only with ``force``).

    Refused always: a symbolic link (the bundle would land wherever it points), a file, FIFO,
    socket or device, the run folder, a folder inside it or one that holds it. Refused unless
    ``force``: a folder holding an earlier bundle (it is replaced) or someone's files (named;
    they are kept and left out of the manifest), like ``mmat build``'s ``--out`` refusal."""
    import logging

    from mmat_core.errors import OutputDirError

    if bundle.is_symlink():
        raise OutputDirError(f"--bundle {bundle} is a symbolic link to {os.readlink(bundle)}: give the folder it "
                             "should be written to itself, so the bundle lands where you can see it")
    if bundle.exists() and not bundle.is_dir():
        raise OutputDirError(f"--bundle {bundle} is {_kind_of(bundle)}, not a folder: give a folder path, new or empty")
    target, run = bundle.resolve(), run_dir.resolve()
    relation = ("is the run folder" if target == run else "is inside the run folder" if run in target.parents
                else "holds the run folder" if target in run.parents else "")
    if relation:
        raise OutputDirError(f"--bundle {bundle} {relation} {run_dir}: write the bundle beside the run, not in it or "
                             "around it (a bundle holds only its own files)")
    if not bundle.is_dir():
        return []
    present = sorted(entry.name for entry in bundle.iterdir())
    if not present:
        return []
    if BUNDLE_MANIFEST in present:
        if not force:
            raise OutputDirError(f"--bundle {bundle} already holds a bundle ({BUNDLE_MANIFEST}): give a new folder, or "
                                 "pass --force to replace it")
        return present
    if not force:
        raise OutputDirError(f"--bundle {bundle} is not empty (it holds {_shown(present)}): give a new or empty folder, "
                             "or pass --force to write the bundle beside those files (they are kept)")
    logging.getLogger(__name__).warning("--force: writing the bundle into %s beside files it did not write (%s); any "
                                        "named like a bundle file is replaced", bundle, _shown(present))
    return present


#: Prefix of the folder a bundle is written in before it is renamed into place (beside the target).
_PARTIAL = ".mmat-bundle-partial-"


def _partial_dir(target: Path) -> Path:
    """A new folder beside ``target`` to write the bundle in; leftovers of killed exports to the
    same target (their pid gone) are removed first."""
    import hashlib
    import shutil

    key = hashlib.sha256(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{_PARTIAL}{key}-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = target.parent / f"{_PARTIAL}{key}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish_bundle(partial: Path, target: Path, present: list[str]) -> None:
    """Move the finished bundle (manifest included) from ``partial`` to ``target``.

    A new or empty target: one ``rename`` of the folder, so the bundle appears whole or not at
    all, and a second export racing for the same folder finds it taken and is refused. A target
    with files (``--force``): the old manifest goes first (the folder stops claiming to be a
    complete bundle), then the files the old manifest listed, then the new files, manifest last."""
    import errno
    import json
    import shutil

    from mmat_core.errors import OutputDirError

    if not present:
        try:
            os.rename(partial, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            shutil.rmtree(partial, ignore_errors=True)
            raise OutputDirError(f"--bundle {target}: another process wrote into the folder while this bundle was being "
                                 "made; nothing of this export was published there") from None
    old = target / BUNDLE_MANIFEST
    listed: list[str] = []
    if old.is_file():
        try:
            listed = [str(f["path"]) for f in json.loads(old.read_text(encoding="utf-8")).get("files", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            listed = []
        old.unlink()
    root = target.resolve()
    for name in listed:
        path = (root / name).resolve()
        if root in path.parents and path.is_file():  # never outside the bundle, whatever the old manifest says
            path.unlink()
    for path in sorted(p for p in partial.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST):
        destination = target / path.relative_to(partial)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
    os.replace(partial / BUNDLE_MANIFEST, target / BUNDLE_MANIFEST)
    shutil.rmtree(partial, ignore_errors=True)


def verify_bundle(bundle: str | Path) -> list[str]:
    """Check a bundle against its manifest, e.g. after copying it: every listed file present,
    with its size and SHA-256, no listed path leaving the folder, and no file the manifest does
    not list (except those it names as kept beside it). Returns the problems, one line each."""
    import json

    root = Path(bundle)
    manifest_path = root / BUNDLE_MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path}: missing: not a complete bundle"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = list(manifest["files"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return [f"{manifest_path}: not a bundle manifest ({exc})"]
    problems: list[str] = []
    resolved = root.resolve()
    listed: set[str] = set()
    for entry in entries:
        name = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        path = (resolved / name).resolve()
        if not name or resolved not in path.parents:
            problems.append(f"{name or entry!r}: points outside the bundle")
            continue
        listed.add(path.relative_to(resolved).as_posix())
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.get("bytes"):
            problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {entry.get('bytes')}")
        elif _sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name}: SHA-256 differs from the manifest (the file changed)")
    kept = {str(n) for n in manifest.get("not_bundled", [])}
    for path in sorted(p for p in resolved.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST):
        relative = path.relative_to(resolved).as_posix()
        if relative not in listed and relative.split("/", 1)[0] not in kept:
            problems.append(f"{relative}: not in the manifest")
    return problems


def bundle_run(run_dir: str | Path, formats: Sequence[str | dict[str, Any] | Formatter], bundle_dir: str | Path,
               *, status: str | None = None, plugins: Any = None, force: bool = False) -> ExportResult:
    """Write a self-contained dataset folder: ``formats`` from the run's stored Traces, the images
    their rows use (content-addressed under ``images/``, paths relative to the folder), the
    Hugging Face dataset and its card at the root (``README.md``, so ``datasets.load_dataset(DIR)``
    reads it), and ``manifest.json`` listing every file with its size and SHA-256 (check a copy
    with :func:`verify_bundle`). The folder loads from any machine once copied: nothing in it
    points outside it.

    ``bundle_dir`` must be new or empty, unless ``force`` (see :func:`check_bundle_dir`). The
    bundle is written in a folder beside it and renamed into place with its manifest, so a crash
    or ``kill -9`` leaves no folder that looks complete. Traces whose images cannot be read, or
    no longer match their SHA-256, are left out of every format and listed in
    ``export_quarantine.jsonl``.
    """
    import json
    import shutil

    from mmat_core.plugins import mmat_version
    from mmat_core.writers import write_json_atomic

    run_dir = Path(run_dir)
    target = Path(os.path.abspath(bundle_dir))
    present = check_bundle_dir(target, run_dir, force=force)
    partial = _partial_dir(target)
    try:
        formatters = resolve_formatters(_bundle_specs(formats, partial, plugins), plugins)
        store = open_store(run_dir)
        try:
            ctx = run_format_context(store, run_dir, plugins)
            bundler = _Bundler(partial, ctx)
            models = any(not f.accepts_dicts for f in formatters)
            items = bundler.rewrite(iter_stored(store, models=models, dicts=True, status=status))
            result = write_formats(formatters, items, partial, ctx)
        finally:
            store.close()
        result.rejected[:0] = bundler.rejected
        if result.rejected:
            write_rejected(partial / EXPORT_QUARANTINE, result.rejected)
        files = sorted(p for p in partial.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST)
        manifest = {
            "bundle_layout": BUNDLE_LAYOUT_VERSION,
            "mmat_version": mmat_version(),
            "run_id": ctx.manifest.run_id if ctx.manifest is not None else None,
            "traces_read": result.traces,
            "left_out": len(result.rejected),
            "formats": {name: [p.resolve().relative_to(partial.resolve()).as_posix() for p in paths]
                        for name, paths in result.files.items()},
            "images": {"folder": BUNDLE_IMAGES, "count": len(bundler.copied), "naming": "images/<sha256[:2]>/<sha256>.<ext>"},
            "load": {
                "datasets": "datasets.load_dataset(BUNDLE_DIR)",
                "ms_swift": "ROOT_IMAGE_DIR=BUNDLE_DIR swift sft --dataset BUNDLE_DIR/<ms_swift file> ...",
                "llama_factory": "dataset_dir: BUNDLE_DIR, media_dir: BUNDLE_DIR, dataset: <key of dataset_info.json>",
                "internvl": "run from BUNDLE_DIR (the meta file's root and annotation are relative to it)",
                "llava": "--image_folder BUNDLE_DIR",
            },
            "verify": "mmat export --verify-bundle BUNDLE_DIR",
            "files": [_file_entry(p, partial) for p in files],
        }
        bundled = {p.relative_to(partial).parts[0] for p in files}
        kept = [name for name in present if name != BUNDLE_MANIFEST and name not in bundled]
        if kept:  # --force beside someone's files: named, so verify_bundle does not call them strays
            manifest["not_bundled"] = kept
        write_json_atomic(partial / BUNDLE_MANIFEST, json.loads(json.dumps(manifest)))
        _publish_bundle(partial, target, present)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # What was written, as the user will find it: paths (and the image root the consumer
    # checks use) in the published folder, not the one it was written in.
    moved = {name: [target / Path(p).resolve().relative_to(partial.resolve()) for p in paths]
             for name, paths in result.files.items()}
    result.files = moved
    result.files["bundle"] = [target / BUNDLE_MANIFEST]
    result.out_dir = target
    for formatter in formatters:
        if "image_root" in type(formatter.options).model_fields:
            formatter.options = formatter.options.model_copy(update={"image_root": str(target)})
    return result


# ---- consumer checks: the export fed to the loader of the framework it is for ---------------


@dataclass
class ConsumerCheck:
    """What one consumer check found. ``status``: ``ok``, ``failed`` (the consumer's code refused
    rows), ``missing`` (the consumer is not installed in that Python) or ``none`` (no package to
    run for this format; ``detail`` says how it is checked instead)."""

    format: str
    status: str
    detail: str
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    python: str = ""


def check_exports(result: ExportResult, pythons: dict[str, str] | None = None, *, timeout: float = 1800) -> list[ConsumerCheck]:
    """Feed each format ``result`` wrote to its consumer's own loading code, in a subprocess of
    ``pythons[format]`` (or ``pythons[""]``, or this Python): ms-swift's dataset loader,
    LLaMA-Factory's loader and converter, ``datasets.load_dataset``, the openai SDK's types. A
    formatter names its check with ``consumer_check(files)`` -> (script, args) or None, and says
    what stands in for it with ``consumer_note``."""
    import sys

    pythons = pythons or {}
    reports: list[ConsumerCheck] = []
    for formatter in result.formatters:
        files = result.files.get(formatter.name, [])
        plan = getattr(formatter, "consumer_check", lambda _files: None)(files) if files else None
        if plan is None:
            note = getattr(formatter, "consumer_note", "") or "no consumer check is defined for this format"
            reports.append(ConsumerCheck(formatter.name, "none", note))
            continue
        script, args = plan
        python = pythons.get(formatter.name) or pythons.get("") or sys.executable
        try:
            code, stdout, stderr = _run_bounded([python, str(script), *args], timeout)
        except OSError as exc:
            reports.append(ConsumerCheck(formatter.name, "failed", f"could not run {python}: {exc}", python=python))
            continue
        if code is None:
            reports.append(ConsumerCheck(formatter.name, "failed", f"{python} was stopped after {timeout:g} s (raise "
                                         "--check-timeout if the consumer needs longer)", python=python))
            continue
        report = _check_report(stdout, formatter.name)
        if report is None:
            # Exit 0 is not enough: a program that is no Python, or a Python that never ran the
            # check, says nothing about the rows.
            last = (stderr.strip().splitlines() or stdout.strip().splitlines() or ["no output"])[-1]
            reports.append(ConsumerCheck(formatter.name, "failed", f"{python} gave no report (exit {code}: {last}); "
                                         "give --check-python the python of the consumer's environment", python=python))
            continue
        status = "ok" if code == 0 and report.get("ok") else "missing" if code == 3 else "failed"
        detail = report.get("detail") or ("; ".join(report.get("problems", [])[:1]) if status != "ok" else "")
        reports.append(ConsumerCheck(formatter.name, status, detail, int(report.get("rows", 0)),
                                     list(report.get("problems", [])), python))
    return reports


def _check_report(stdout: str, name: str) -> dict[str, Any] | None:
    """The check script's JSON report (its last line that parses as one for ``name``), or None."""
    import json

    for line in reversed(stdout.splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("format") == name:
            return report
    return None


def _run_bounded(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run ``command`` in its own process group; (exit code, stdout, stderr), exit code None when
    it ran past ``timeout`` and the whole group was killed (children included: one that kept
    the output pipe open would otherwise hold the export forever)."""
    import signal
    import subprocess

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = process.communicate()
        return None, stdout, stderr
    return process.returncode, stdout, stderr


class HubPushError(MmatError):
    """A push to the Hub failed: says at which step, what the repository already holds, and
    that nothing of it should be taken as a complete upload."""

    def __init__(self, repo_id: str, stage: str, reached: str, exc: BaseException, token: str | None = None) -> None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = " ".join(lines[:2])[:300]
        for secret in {token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")} - {None, ""}:
            reason = reason.replace(str(secret), "***")  # an error that echoes the request must not print the token
        held = "nothing of this push" if reached == "nothing" else f"{reached} (README.md, LICENSE.md) but the data did not arrive"
        super().__init__(f"push to {repo_id} failed while {stage} ({type(exc).__name__}: {reason}); the repository holds "
                         f"{held}; the local files are complete: run the same command again to push again")


def push_to_hub(result: ExportResult, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Push the Hugging Face dataset ``result`` wrote (an ``hf_dataset`` export or a bundle's) to
    the Hub repository ``repo_id`` with ``datasets``' own ``push_to_hub``; returns its URL.

    The card goes first (``README.md`` and the ``LICENSE.md`` it links), so that datasets' push,
    which updates the card already in the repository, keeps mmat's provenance tables and licence
    fields and writes its own ``dataset_info`` and ``configs`` into the header.
    """
    import datasets
    from huggingface_hub import HfApi

    written = result.files.get("hf_dataset") or []
    cards = [p for p in written if p.name == "README.md"]
    if not cards:
        raise ConfigError("nothing to push: this export wrote no Hugging Face dataset (add --format hf_dataset)")
    folder = cards[0].parent
    api = HfApi(token=token)
    stage, reached = "creating the repository", "nothing"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        for name in ("LICENSE.md", "README.md"):
            if (folder / name).is_file():
                stage = f"uploading {name}"
                api.upload_file(path_or_fileobj=str(folder / name), path_in_repo=name, repo_id=repo_id, repo_type="dataset",
                                commit_message=f"mmat: {name}")
                reached = "the card" if reached == "nothing" or name == "README.md" else reached
        stage = "uploading the data"
        loaded = datasets.load_dataset(str(folder))
        loaded.push_to_hub(repo_id, private=private, token=token, commit_message="mmat: data")
    except Exception as exc:  # any failure of the Hub or the network ends the push the same way
        raise HubPushError(repo_id, stage, reached, exc, token) from exc
    return f"{datasets.config.HF_ENDPOINT.rstrip('/')}/datasets/{repo_id}"
