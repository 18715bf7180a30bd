"""``mmat critique``: run critics over existing traces without regenerating them.

Typical uses: re-score a finished run with a new quality judge, add answer verification to an
old dataset, or try a stricter cheating judge and see what it would drop::

    mmat critique runs/demo --critics quality --llm openai --model gpt-4o-mini -o rescored.jsonl
    mmat critique traces.jsonl --critics answer_match --set critics[0].threshold=0.8

``FILE`` is a run directory (its ``run.sqlite``), a run store file, or a JSON Lines file with one
Trace per line (``mmat`` writes such files with ``-o``). The input is never modified.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


@dataclass
class Unreadable:
    """A line of a traces file that is not a Trace: reported, never fatal."""

    where: str
    reason: str


@dataclass
class CritiqueReport:
    """What a critique run saw: verdicts per critic, scores, statuses and unreadable rows."""

    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    unreadable: list[Unreadable] = field(default_factory=list)
    traces: int = 0

    def add(self, trace: Any, critics: set[str]) -> None:
        """Count the current verdicts of the re-run critics on ``trace`` and its status."""
        from mmat_core.engine.reflection import current_verdicts

        self.traces += 1
        self.statuses[trace.status] += 1
        for verdict in current_verdicts(trace):
            if verdict.critic not in critics:
                continue
            self.verdicts.setdefault(verdict.critic, Counter())[verdict.verdict] += 1
            if verdict.score is not None:
                self.scores.setdefault(verdict.critic, []).append(verdict.score)


def read_traces(path: Path) -> Iterator[Any]:
    """Traces from a run directory, a run store or a JSONL file, in order; a line that is not a
    Trace comes out as :class:`Unreadable` with its line number and why."""
    from pydantic import ValidationError

    from mmat_core.models import Trace
    from mmat_core.store import STORE_FILE, RunStore

    if path.is_dir():
        if not (path / STORE_FILE).exists():
            raise ConfigError(f"no {STORE_FILE} here: give a run directory, a run store or a traces .jsonl file", file=str(path))
        path = path / STORE_FILE
    if path.suffix in (".sqlite", ".db"):
        store = RunStore(path)
        try:
            yield from store.traces()
        finally:
            store.close()
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield Trace.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(line)"
                yield Unreadable(f"{path.name}:{number}", f"not a Trace: {where}: {first['msg']}")


def stored_run_config(path: Path) -> dict[str, Any]:
    """The configuration a run directory was built with ({} for other inputs)."""
    from mmat_core.store import STORE_FILE, RunStore

    store_file = path / STORE_FILE if path.is_dir() else path
    if store_file.suffix not in (".sqlite", ".db") or not store_file.exists():
        return {}
    store = RunStore(store_file)
    try:
        config = store.get_meta("config") or {}
    finally:
        store.close()
    # Only what critique uses: sources or outputs of the old run must not stop a re-score.
    return {key: config[key] for key in ("llm", "critics", "reflection", "engine") if key in config}


def _make(manager: Any, family: str, spec: Any, key: str, config_file: str | None) -> Any:
    from pydantic import ValidationError

    from mmat_core.config import validation_error

    try:
        cls = manager.get(family, spec.name)
    except ConfigError as exc:
        raise ConfigError(str(exc), file=config_file, key=f"{key}.name") from None
    try:
        return cls(cls.Options(**spec.options))
    except ValidationError as exc:
        raise validation_error(exc, cls.Options, config_file, prefix=f"{key}.") from None


async def critique_traces(traces: Iterator[Any], critics: list[Any], llm: Any, config: Any, *,
                          reflect: bool, cache_path: Path | None, out: Path | None,
                          image_dir: Path | None = None) -> tuple[CritiqueReport, Any]:
    """Re-run ``critics`` over ``traces``; write them to ``out`` (JSONL, atomically) when given.

    Returns the report and a :class:`~mmat_core.yields.YieldTally` of the re-critiqued traces."""
    from mmat_core.engine.cache import Cache
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.reflection import ReflectionStage, recritique
    from mmat_core.engine.scheduler import Scheduler, SchedulerSettings
    from mmat_core.images import ImageStore
    from mmat_core.writers import AtomicFile, dumps_line
    from mmat_core.yields import YieldTally

    settings = config.reflection if reflect else config.reflection.model_copy(update={"max_rounds": 0})
    cache = Cache(cache_path) if cache_path else None
    images = ImageStore(image_dir)
    client = EngineClient(llm, Scheduler(SchedulerSettings(concurrency=config.engine.concurrency)), images, cache)
    stage = ReflectionStage(critics, client, images, settings)
    names = {critic.name for critic in critics}
    report, tally = CritiqueReport(), YieldTally()
    writer = AtomicFile(out) if out else None
    batch: list[Any] = []

    async def flush() -> None:
        done = await asyncio.gather(*(recritique(stage, trace) for trace in batch))
        for trace in done:
            report.add(trace, names)
            tally.add_trace(trace)
            if writer is not None:
                writer.write(dumps_line(trace.model_dump(mode="json")))
        batch.clear()

    try:
        for item in traces:
            if isinstance(item, Unreadable):
                report.unreadable.append(item)
                continue
            batch.append(item)
            if len(batch) >= config.engine.concurrency:
                await flush()
        await flush()
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if cache is not None:
            cache.close()
        await llm.aclose()
    return report, tally


def report_lines(report: CritiqueReport, tally: Any) -> list[str]:
    """The summary printed by ``mmat critique``."""
    from mmat_core.yields import yield_table

    lines = [f"Critiqued {report.traces} traces" + (f" ({len(report.unreadable)} unreadable rows skipped)" if report.unreadable else "")]
    lines.append(f"  {'critic':<16} {'pass':>6} {'fix':>6} {'reject':>6} {'mean score':>11}")
    for critic, counts in sorted(report.verdicts.items()):
        scores = report.scores.get(critic) or []
        mean = f"{sum(scores) / len(scores):.3f}" if scores else "-"
        lines.append(f"  {critic:<16} {counts['pass']:>6} {counts['fix']:>6} {counts['reject']:>6} {mean:>11}")
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())))
    lines += yield_table(tally.result())
    for row in report.unreadable[:5]:
        lines.append(f"  skipped {row.where}: {row.reason}")
    if len(report.unreadable) > 5:
        lines.append(f"  ... and {len(report.unreadable) - 5} more unreadable rows")
    return lines


@click.command()
@click.argument("path", metavar="FILE", type=click.Path(exists=True, path_type=Path))
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML or TOML config (its llm, critics, reflection and engine sections are used).")
@click.option("--critics", help="Comma-separated critics to run (default: the config's, or the run's).")
@click.option("--llm", help="LLM backend for the judges (offline, openai, anthropic, ...).")
@click.option("--model", help="Model name for the LLM backend.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. reflection.on_failure=keep_flagged.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the re-critiqued traces here (JSONL).")
@click.option("--reflect", is_flag=True, help="Splice reflections for 'fix' verdicts (the generator writes corrections); "
              "without it a 'fix' counts as a failure under reflection.on_failure.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Cache file for judge calls (default: the run directory's cache.sqlite; none for a .jsonl input).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def critique(path: Path, config_file: Path | None, critics: str | None, llm: str | None, model: str | None,
             set_items: tuple[str, ...], out: Path | None, reflect: bool, cache_path: Path | None, as_json: bool) -> None:
    """Run critics over existing traces (a run directory, run.sqlite or traces .jsonl) without regenerating them."""
    from mmat_core.cli.build import collect_overrides
    from mmat_core.config import load_config
    from mmat_core.plugins import get_plugin_manager

    overrides = {} if config_file else stored_run_config(path)
    overrides.update(collect_overrides(llm=llm, model=model, critics=critics, set_items=set_items))
    config = load_config(config_file, overrides)
    if not config.critics:
        raise ConfigError("no critics to run: give --critics a,b", key="critics")
    manager = get_plugin_manager()
    source_file = str(config_file) if config_file else None
    critic_objects = [_make(manager, "critic", spec, f"critics[{i}]", source_file) for i, spec in enumerate(config.critics)]
    backend = _make(manager, "llm", config.llm, "llm", source_file)
    if out is not None and out.resolve() == path.resolve():
        raise ConfigError("--out must differ from the input: the input is never modified", key="--out")
    run_dir = path if path.is_dir() else path.parent
    if cache_path is None and path.is_dir():
        cache_path = run_dir / "cache.sqlite"
    from contextlib import nullcontext

    from mmat_core.rundir import RunDirLock

    # A run folder's cache is written to: not while a build (or another critique) writes there.
    with RunDirLock(run_dir, "mmat critique") if path.is_dir() else nullcontext():
        report, tally = asyncio.run(critique_traces(
            read_traces(path), critic_objects, backend, config, reflect=reflect, cache_path=cache_path, out=out,
            image_dir=run_dir / "images",
        ))
    if as_json:
        click.echo(json.dumps({
            "traces": report.traces,
            "verdicts": {k: dict(v) for k, v in report.verdicts.items()},
            "mean_score": {k: sum(v) / len(v) for k, v in report.scores.items() if v},
            "status": dict(report.statuses),
            "unreadable": [{"where": u.where, "reason": u.reason} for u in report.unreadable],
            "yield_by_source": {k: v.model_dump(mode="json") for k, v in tally.result().items()},
            "out": str(out) if out else None,
        }, indent=2))
        return
    for line in report_lines(report, tally):
        click.echo(line)
    if out is not None:
        click.echo(f"  traces: {out}")
