"""Programmatic assembly and the in-process run of a pipeline.

::

    from mmat_core import Pipeline

    result = Pipeline(source="sample", llm="offline", tools=["ocr", "face_detection"],
                      critics=["answer_match"], formatters=["rr", "orr"]).run("runs/demo")

Components are given by name, as ``{"name": ..., **options}`` or as ready objects. Everything is
resolved and validated in the constructor, so a bad name or option fails before any work and
before the output directory is touched.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat_core.components import (
    Component,
    Critic,
    Executor,
    FormatContext,
    Formatter,
    LLMBackend,
    SearchBackend,
    Source,
    Tool,
)
from mmat_core.config import ComponentSpec, PipelineConfig
from mmat_core.curation import Curator
from mmat_core.errors import ConfigError, DiskFullError
from mmat_core.models import Rejected, SourceSample
from mmat_core.plugins import PluginManager, get_plugin_manager
from mmat_core.preflight import cannot_start, readiness
from mmat_core.run.assembly import ComponentArg, create_component
from mmat_core.run.context import ProgressCallback, RunResult
from mmat_core.run.local import run_local
from mmat_core.rundir import RunDirLock, check_run_dir, command_line

__all__ = ["ComponentArg", "LocalRun", "Pipeline", "ProgressCallback", "RunResult", "create_component", "disk_full_error"]

class Pipeline:
    """A fully resolved pipeline: components instantiated, options validated."""

    def __init__(
        self,
        source: ComponentArg | list[ComponentArg] | None = None,
        llm: ComponentArg | None = None,
        tools: list[ComponentArg] | None = None,
        critics: list[ComponentArg] | None = None,
        formatters: list[ComponentArg] | None = None,
        search: ComponentArg | None | bool = True,
        executor: ComponentArg | None = None,
        *,
        config: PipelineConfig | None = None,
        plugins: PluginManager | None = None,
        config_file: str | None = None,
    ) -> None:
        base = config or PipelineConfig()
        self.plugins = plugins or get_plugin_manager()
        self.config_file = config_file
        # Components that cannot be built, gathered so one error names them all (see _make).
        self._problems: list[ConfigError] = []
        self.config = base
        sources = source if isinstance(source, list) else ([source] if source is not None else list(base.sources))
        self.sources: list[Source] = [self._make("source", s, f"source[{i}]" if len(sources) > 1 else "source") for i, s in enumerate(sources)]  # type: ignore[misc]
        self.llm: LLMBackend = self._make("llm", llm if llm is not None else base.llm, "llm")  # type: ignore[assignment]
        tool_args = tools if tools is not None else base.tools
        self.tools: list[Tool] = [self._make("tool", t, f"tools[{i}]") for i, t in enumerate(tool_args)]  # type: ignore[misc]
        critic_args = critics if critics is not None else base.critics
        self.critics: list[Critic] = [self._make("critic", c, f"critics[{i}]") for i, c in enumerate(critic_args)]  # type: ignore[misc]
        formatter_args = formatters if formatters is not None else base.formatters
        self.formatters: list[Formatter] = [self._make("formatter", f, f"formatters[{i}]") for i, f in enumerate(formatter_args)]  # type: ignore[misc]
        if search is True and "search" not in base.model_fields_set:
            # Unasked for, search is on for the bundled sample only (its own corpus), whatever
            # sources were given in code (see PipelineConfig).
            search = ComponentSpec(name="local") if all(s is not None and s.name == "sample" for s in self.sources) else None
        search_arg = base.search if search is True else (None if search is False else search)
        self.search: SearchBackend | None = self._make("search", search_arg, "search") if search_arg is not None else None  # type: ignore[assignment]
        self.executor: Executor = self._make("executor", executor if executor is not None else base.executor, "executor")  # type: ignore[assignment]
        if self._problems:
            raise self._problems[0] if len(self._problems) == 1 else cannot_start(
                [str(exc).removeprefix(f"{exc.file}: ") if exc.file else str(exc) for exc in self._problems],
                self.config_file)
        self._check_unique("tools", self.tools)
        self._check_unique("formatters", self.formatters)
        # What actually runs (components given in code included, options with their defaults):
        # this is what run.json, the run store and resume see, not the base config.
        self.config = self._effective_config(base)
        #: Progress callback of the current run (set by :meth:`run`).
        self.progress: ProgressCallback | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig, *, plugins: PluginManager | None = None, config_file: str | None = None) -> Pipeline:
        """Build a pipeline from a validated configuration."""
        return cls(config=config, plugins=plugins, config_file=config_file)

    # -- resolution -------------------------------------------------------------------------

    def _make(self, family: str, arg: Any, key: str) -> Component:
        try:
            return create_component(family, arg, key=key, plugins=self.plugins, config_file=self.config_file)
        except ConfigError as exc:
            # Kept, and the next component built: the constructor raises them together.
            self._problems.append(exc)
            return None  # type: ignore[return-value]

    def _effective_config(self, base: PipelineConfig) -> PipelineConfig:
        def spec(component: Component) -> ComponentSpec:
            return ComponentSpec(name=component.name, **component.options.model_dump(mode="json"))

        return base.model_copy(update={
            "source": [spec(s) for s in self.sources] if len(self.sources) > 1 else spec(self.sources[0]),
            "llm": spec(self.llm),
            "tools": [spec(t) for t in self.tools],
            "critics": [spec(c) for c in self.critics],
            "formatters": [spec(f) for f in self.formatters],
            "search": spec(self.search) if self.search is not None else None,
            "executor": spec(self.executor),
        })

    def _check_unique(self, key: str, components: list[Any]) -> None:
        names = [c.name for c in components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"listed twice: {', '.join(duplicates)}", file=self.config_file, key=key)

    def keyed_components(self) -> list[tuple[str, Component]]:
        """Every component with where it sits in the configuration (``source``, ``tools[1]``)."""
        keyed: list[tuple[str, Component]] = [
            (f"source[{i}]" if len(self.sources) > 1 else "source", s) for i, s in enumerate(self.sources)]
        keyed.append(("llm", self.llm))
        keyed += [(f"tools[{i}]", t) for i, t in enumerate(self.tools)]
        keyed += [("search", self.search)] if self.search is not None else []
        keyed += [(f"critics[{i}]", c) for i, c in enumerate(self.critics)]
        keyed += [(f"formatters[{i}]", f) for i, f in enumerate(self.formatters)]
        return [*keyed, ("executor", self.executor)]

    def check_ready(self) -> None:
        """Raise one ConfigError listing what every component still lacks to run (its
        :meth:`~mmat_core.components.Component.preflight`: weights, files, ...); :meth:`run`
        calls it before any model call and before the run folder is created."""
        problems = [line for key, component in self.keyed_components() for line in readiness(key, component)]
        if problems:
            raise cannot_start(problems, self.config_file)

    def components(self) -> dict[str, Any]:
        """Family -> name, plugin and version of each component (for run.json)."""

        def info(c: Component) -> dict[str, str]:
            return {"name": c.name, "plugin": type(c).plugin, "version": c.version}

        return {
            "sources": [info(s) for s in self.sources],
            "llm": {**info(self.llm), "model": self.llm.model},
            "tools": [info(t) for t in self.tools],
            "search": info(self.search) if self.search else None,
            "critics": [info(c) for c in self.critics],
            "formatters": [info(f) for f in self.formatters],
            "executor": info(self.executor),
        }

    def format_context(self) -> FormatContext:
        """What formatters need to know of this run."""
        from mmat_core.components import ToolInfo

        return FormatContext(
            tools=[ToolInfo(name=t.name, label=t.result_label(), description=t.description) for t in self.tools],
            rag_enabled=self.search is not None,
        )

    # -- running ----------------------------------------------------------------------------

    def run(self, out_dir: str | Path, *, progress: ProgressCallback | None = None, force: bool = False) -> RunResult:
        """Run the whole pipeline into ``out_dir`` with the configured executor; ``progress``
        receives events from an in-process run (executors that run elsewhere may ignore it).

        ``out_dir`` must be new, empty or a run directory mmat made (``force`` writes into any
        folder); the run holds the folder's lock throughout, so a second run into it is refused
        (:mod:`mmat_core.rundir`). A full disk ends as :class:`~mmat_core.errors.DiskFullError`.
        """
        self.progress = progress
        out = Path(out_dir)
        self.check_ready()
        check_run_dir(out, force=force)
        try:
            with RunDirLock(out, command_line()):
                return self.executor.execute(self, out)
        except (OSError, sqlite3.Error) as exc:
            full = disk_full_error(exc, out)
            if full is None:
                raise
            raise full from exc

    def run_local(self, out_dir: Path, *, progress: ProgressCallback | None = None) -> RunResult:
        """Run in this process (what the ``local`` executor does)."""
        return asyncio.run(run_local(self, Path(out_dir), progress or self.progress))

    def iter_samples(self, curator: Curator | None = None) -> Iterator[SourceSample | Rejected]:
        """Every source's rows, curated (no model call): used by ``build --dry-run``. Pass a
        ``curator`` to read its counts (kept, skipped, rejected by source) afterwards."""
        curator = curator or Curator(self.config.curation, self.sources)
        return curator(row for source in self.sources for row in source.iter_rows())


#: OSError numbers that mean "no room": a full disk, a quota, a file-size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full_error(exc: BaseException, out_dir: Path) -> DiskFullError | None:
    """A :class:`DiskFullError` saying what to do when ``exc`` (or an exception it was raised
    from or during) is a lack of space; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        full = isinstance(current, OSError) and current.errno in _NO_ROOM
        # SQLite says SQLITE_FULL in words ("database or disk is full").
        full = full or (isinstance(current, sqlite3.Error) and "full" in str(current).lower())
        if full:
            where = Path(getattr(current, "filename", None) or out_dir)
            probe = next((p for p in (where, *where.parents) if p.exists()), out_dir)
            try:
                free = f"{shutil.disk_usage(probe).free / 1e6:,.1f} MB free there now"
            except OSError:
                free = "free space unknown"
            what = "a file-size limit was reached" if getattr(current, "errno", None) == errno.EFBIG else "the disk is full"
            said = getattr(current, "strerror", None) or str(current)
            return DiskFullError(f"{what} ({said}) writing {where} ({free}): make room (or give `out` / engine.cache_path "
                                 f"another disk), then run the same command again: finished samples are kept and the "
                                 f"run resumes (mmat build --resume {out_dir})")
        current = current.__cause__ or current.__context__
    return None


class LocalRun:
    """One in-process run of a pipeline into a run directory: :func:`mmat_core.run.run_local`
    (prepare, generate, decide the manifest, publish) held as an object."""

    def __init__(self, pipeline: Pipeline, out_dir: Path, progress: ProgressCallback | None = None) -> None:
        self.pipeline = pipeline
        self.out_dir = out_dir
        self.progress = progress

    async def run(self) -> RunResult:
        """Build every unfinished sample, then write the outputs, run.json and engine.json."""
        return await run_local(self.pipeline, self.out_dir, self.progress)
