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
            suffix = _IMAGE_SUFFIXES.get(str(image.get("format") or "").upper()) or Path(image.get("path") or "").suffix
            self.copied[sha] = Path(self.store.put(data, suffix.lower()).path or "")
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


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def bundle_run(run_dir: str | Path, formats: Sequence[str | dict[str, Any] | Formatter], bundle_dir: str | Path,
               *, status: str | None = None, plugins: Any = None) -> ExportResult:
    """Write a self-contained dataset folder: ``formats`` from the run's stored Traces, the images
    their rows use (content-addressed under ``images/``, paths relative to the folder), the
    Hugging Face dataset and its card at the root (``README.md``, so ``datasets.load_dataset(DIR)``
    reads it), and ``manifest.json`` listing every file with its size and SHA-256. The folder
    loads from any machine once copied: nothing in it points outside it.

    ``bundle_dir`` must not exist or be empty. Traces whose images cannot be read are left out
    of every format and listed in ``export_quarantine.jsonl``.
    """
    import json

    from mmat_core.plugins import mmat_version
    from mmat_core.writers import write_json_atomic

    run_dir = Path(run_dir)
    bundle = Path(bundle_dir).resolve()
    if bundle.exists() and (not bundle.is_dir() or any(bundle.iterdir())):
        raise ConfigError("the bundle folder must be new or empty (a bundle lists every file it holds)", file=str(bundle))
    if bundle == run_dir.resolve() or run_dir.resolve() in bundle.parents:
        raise ConfigError("write the bundle outside the run folder", file=str(bundle))
    formatters = resolve_formatters(_bundle_specs(formats, bundle, plugins), plugins)
    bundle.mkdir(parents=True, exist_ok=True)
    store = open_store(run_dir)
    try:
        ctx = run_format_context(store, run_dir, plugins)
        bundler = _Bundler(bundle, ctx)
        models = any(not f.accepts_dicts for f in formatters)
        items = bundler.rewrite(iter_stored(store, models=models, dicts=True, status=status))
        result = write_formats(formatters, items, bundle, ctx)
    finally:
        store.close()
    result.rejected[:0] = bundler.rejected
    if result.rejected:
        write_rejected(bundle / EXPORT_QUARANTINE, result.rejected)
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST)
    manifest = {
        "bundle_layout": BUNDLE_LAYOUT_VERSION,
        "mmat_version": mmat_version(),
        "run_id": ctx.manifest.run_id if ctx.manifest is not None else None,
        "traces_read": result.traces,
        "left_out": len(result.rejected),
        "formats": {name: [p.resolve().relative_to(bundle).as_posix() for p in paths] for name, paths in result.files.items()},
        "images": {"folder": BUNDLE_IMAGES, "count": len(bundler.copied), "naming": "images/<sha256[:2]>/<sha256>.<ext>"},
        "load": {
            "datasets": "datasets.load_dataset(BUNDLE_DIR)",
            "ms_swift": "ROOT_IMAGE_DIR=BUNDLE_DIR swift sft --dataset BUNDLE_DIR/<ms_swift file> ...",
            "llama_factory": "dataset_dir: BUNDLE_DIR, media_dir: BUNDLE_DIR, dataset: <key of dataset_info.json>",
            "internvl": "run from BUNDLE_DIR (the meta file's root and annotation are relative to it)",
            "llava": "--image_folder BUNDLE_DIR",
        },
        "files": [_file_entry(p, bundle) for p in files],
    }
    result.files["bundle"] = [write_json_atomic(bundle / BUNDLE_MANIFEST, json.loads(json.dumps(manifest)))]
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
    import json
    import subprocess
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
            done = subprocess.run([python, str(script), *args], check=False, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reports.append(ConsumerCheck(formatter.name, "failed", f"could not run {python}: {exc}", python=python))
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        report = json.loads(lines[-1]) if lines else {"problems": [(done.stderr.strip().splitlines() or ["no output"])[-1]]}
        status = "ok" if done.returncode == 0 else "missing" if done.returncode == 3 else "failed"
        detail = report.get("detail") or ("; ".join(report.get("problems", [])[:1]) if status != "ok" else "")
        reports.append(ConsumerCheck(formatter.name, status, detail, int(report.get("rows", 0)),
                                     list(report.get("problems", [])), python))
    return reports


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
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    for name in ("LICENSE.md", "README.md"):
        if (folder / name).is_file():
            api.upload_file(path_or_fileobj=str(folder / name), path_in_repo=name, repo_id=repo_id, repo_type="dataset",
                            commit_message=f"mmat: {name}")
    loaded = datasets.load_dataset(str(folder))
    loaded.push_to_hub(repo_id, private=private, token=token, commit_message="mmat: data")
    return f"{datasets.config.HF_ENDPOINT.rstrip('/')}/datasets/{repo_id}"
