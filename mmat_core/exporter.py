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
from mmat_core.errors import ConfigError
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
