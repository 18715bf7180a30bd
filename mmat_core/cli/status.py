"""``mmat status RUN_DIR``: progress, failures by reason and completeness of a run, read from its store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from mmat_core.models import KEPT_STATUSES

#: Where the Ray executor's driver keeps each worker's state while it runs.
WORKERS_FILE = "workers.json"


def run_status(run_dir: Path) -> dict[str, Any]:
    """What ``mmat status`` reports, as a JSON-ready dict (the store is only read)."""
    from mmat_core.store import STORE_FILE, RunStore

    store = RunStore.open_existing(run_dir)
    try:
        statuses = store.status_counts()
        failures: dict[str, int] = {}
        for failure, count in store.failure_counts().items():
            reason = failure.split(":")[0]
            failures[reason] = failures.get(reason, 0) + count
        finished = store.count()
        total = store.get_meta("stream_total")
        complete = bool(store.get_meta("complete"))
        shards = sorted(p.parent.name for p in (run_dir / "shards").glob(f"*/{STORE_FILE}"))
        workers = read_workers(run_dir)
        return {
            "run_dir": str(run_dir),
            "complete": complete,
            "finished": finished,
            "total": total,
            "remaining": (total - finished) if isinstance(total, int) else None,
            "by_status": dict(sorted(statuses.items())),
            "kept": sum(v for k, v in statuses.items() if k in KEPT_STATUSES),
            "failures": dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
            "rejected": dict(sorted(store.rejected_counts().items(), key=lambda kv: (-kv[1], kv[0]))),
            "config_hash": store.get_meta("content_hash"),
            "config_changes": store.get_meta("config_history") or [],
            "unmerged_shards": shards,
            **({"workers": workers} if workers is not None else {}),
        }
    finally:
        store.close()


def read_workers(run_dir: Path) -> dict[str, Any] | None:
    """What a Ray run's driver last wrote of its workers (``workers.json``), or None."""
    try:
        data = json.loads((run_dir / WORKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def worker_lines(workers: dict[str, Any]) -> list[str]:
    """``mmat status``'s lines on a Ray run's workers: one per worker, then the shared limits."""
    age = time.time() - float(workers.get("updated") or 0)
    when = "final" if workers.get("complete") else f"as of {age:.0f}s ago"
    lines = [f"  Ray workers ({when}; {workers.get('samples_requeued', 0)} samples re-queued from lost workers):"]
    for w in workers.get("workers", []):
        lines.append(f"    {w.get('worker', '?'):<5} {w.get('state', '?'):<9} host {w.get('host', '?')} pid {w.get('pid', '?')}: "
                     f"{w.get('samples_done', 0)} samples, {w.get('calls_made', 0)} calls (+{w.get('cached_calls', 0)} cached), "
                     f"{w.get('batches_in_flight', 0)} batches in flight")
    for name, limits in (workers.get("limits") or {}).items():
        lines.append(f"    shared limits {name}: admission {limits.get('admission_limit')}/{limits.get('concurrency')}, "
                     f"in flight {limits.get('in_flight')}, 429s {limits.get('pushbacks')}")
    return lines


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(run_dir: Path, as_json: bool) -> None:
    """Show RUN_DIR's progress, failures by reason, quarantined rows and whether it is complete.

    Exit status 0 when the run is complete, 3 when it is not (resume it with
    `mmat build --resume RUN_DIR`).
    """
    info = run_status(run_dir)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        total = info["total"]
        done = info["finished"]
        if isinstance(total, int) and total:
            progress = f"{done} of {total} samples finished ({100 * done / total:.1f}%)"
        else:
            progress = f"{done} samples finished (total not known yet: the source was not read to the end)"
        click.echo(f"Run {run_dir}: {'complete' if info['complete'] else 'NOT complete'}")
        click.echo(f"  {progress}, {info['kept']} kept")
        if info["by_status"]:
            click.echo("  by status: " + ", ".join(f"{k} {v}" for k, v in info["by_status"].items()))
        if info["failures"]:
            click.echo("  failed or dropped, by reason:")
            for reason, count in info["failures"].items():
                click.echo(f"    {reason:<36} {count:>8}")
        if info["rejected"]:
            click.echo("  quarantined at the source, by reason:")
            for reason, count in info["rejected"].items():
                click.echo(f"    {reason:<36} {count:>8}")
        for change in info["config_changes"]:
            keys = ", ".join(k for k, _, _ in change["changes"])
            click.echo(f"  configuration changed after {change['finished_before']} samples (applied): {keys}")
        if info["unmerged_shards"]:
            click.echo(f"  Ray worker stores not merged yet: {', '.join(info['unmerged_shards'])}")
        if "workers" in info:
            for line in worker_lines(info["workers"]):
                click.echo(line)
        if not info["complete"]:
            click.echo(f"  resume with: mmat build --resume {run_dir}")
    if not info["complete"]:
        raise SystemExit(3)
