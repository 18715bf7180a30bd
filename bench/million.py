"""A million samples on one machine: the whole pipeline and export, from a generated source, with
the in-process offline backend and a fixed-cost stub tool (HTTP and the real tools have their own
benchmarks). Prints samples/s per stage, memory over time, and how fast a resume at 90% finished
starts working.

    .venv/bin/python bench/million.py            # 1,000,000 samples
    .venv/bin/python bench/million.py --quick    # 20,000 samples, same measurements

Targets (issue 9, on 2 cores): >= 1,000 samples/s end to end; peak memory < 1 GB and flat after
warm-up; a resume at 90% finished starts working within 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.scale.plugin holds the stubs


def rss_mb() -> float:
    """Resident memory of this process in MB (from /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MemorySampler:
    """Samples RSS every ``interval`` seconds in a thread: (seconds since start, MB)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._start, rss_mb()))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self._start, rss_mb()))


def make_pipeline(count: int, cost_ms: float) -> Any:
    """The benchmark pipeline: generated source, offline backend, stub OCR, two critics, RR + ORR."""
    from mmat_core import Pipeline
    from mmat_core.config import load_config
    from mmat_core.plugins import PluginManager, set_plugin_manager
    from tests.scale import plugin as stubs

    manager = PluginManager(block=["tools"])
    manager.register(stubs, "scale-stubs")
    set_plugin_manager(manager)
    config = load_config(None, {
        "source": {"name": "generated", "count": count},
        "llm": "offline",
        "llm_engine": {"progress": False},
        "tools": [{"name": "ocr", "cost_ms": cost_ms}],
        "critics": ["answer_match", "general"],
        "formatters": ["rr", "orr"],
        "search": None,
    })
    return Pipeline.from_config(config, plugins=manager)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 samples instead of 1,000,000")
    parser.add_argument("--count", type=int, help="number of samples (overrides --quick)")
    parser.add_argument("--tool-cost-ms", type=float, default=0.1, help="CPU time of each stub tool call")
    parser.add_argument("--dir", help="run directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the build")
    args = parser.parse_args()
    count = args.count or (20_000 if args.quick else 1_000_000)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mmat-million-"))
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)

    # Stage 1 alone: generate and curate the stream (no model call).
    started = time.monotonic()
    curated = sum(1 for _ in make_pipeline(count, args.tool_cost_ms).iter_samples())
    curate_s = time.monotonic() - started

    pipeline = make_pipeline(count, args.tool_cost_ms)
    with MemorySampler() as memory:
        started = time.monotonic()
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(pipeline.run, out)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        else:
            result = pipeline.run(out)
        total_s = time.monotonic() - started
    generation_s = result.manifest.timings_s["generation"]
    export_s = max(1e-9, result.manifest.timings_s["total"] - generation_s)
    finished = result.manifest.counts["finished"]

    # Memory: peak, and growth after warm-up (the first 20% of the run) to the end.
    peak = max(mb for _, mb in memory.samples)
    warm = [mb for t, mb in memory.samples if t >= 0.2 * total_s]
    warm_start = warm[0] if warm else peak
    growth = (max(warm) - warm_start) if warm else 0.0
    timeline = [(t, mb) for t, mb in memory.samples[:: max(1, len(memory.samples) // 10)]]

    # Resume at 90%: forget the last 10% of finished samples (as a crash would), run again and
    # time until the first sample is finished anew.
    from mmat_core.store import RunStore

    store = RunStore.open(out)
    store.connection().execute("DELETE FROM samples WHERE seq > ?", (int(count * 0.9),))
    kept = store.count()
    store.close()
    first_done: list[float] = []
    resumed = make_pipeline(count, args.tool_cost_ms)
    started = time.monotonic()

    def progress(event: dict[str, Any]) -> None:
        if "done" in event and not first_done:
            first_done.append(time.monotonic() - started)

    resumed.run(out, progress=progress)
    resume_total_s = time.monotonic() - started
    resume_first_s = first_done[0] if first_done else float("nan")

    end_to_end = finished / total_s
    rows = [
        ("samples", f"{finished:,}", ""),
        ("curation (source + stage 1)", f"{curated / curate_s:,.0f} samples/s", ""),
        ("generation (stages 2-3 + store)", f"{finished / generation_s:,.0f} samples/s", ""),
        ("export (RR + ORR + quarantine)", f"{finished / export_s:,.0f} samples/s", ""),
        ("end to end", f"{end_to_end:,.0f} samples/s", ">= 1,000 samples/s"),
        ("peak memory (RSS)", f"{peak:,.0f} MB", "< 1,024 MB"),
        ("growth after warm-up", f"{growth:,.0f} MB", "flat"),
        (f"resume at {kept:,} finished: first new sample", f"{resume_first_s:.2f} s", "<= 10 s"),
        ("resume: whole rerun", f"{resume_total_s:.1f} s", ""),
    ]
    print(f"bench/million.py: {count:,} samples, stub tool {args.tool_cost_ms} ms, {os.cpu_count()} CPUs")
    print(f"{'measure':<44} {'value':>22}   target")
    for name, value, target in rows:
        print(f"{name:<44} {value:>22}   {target}")
    print("memory over time (s, MB): " + ", ".join(f"{t:.0f}:{mb:.0f}" for t, mb in timeline))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT samples={finished} end_to_end_per_s={end_to_end:.0f} curation_per_s={curated / curate_s:.0f} "
          f"generation_per_s={finished / generation_s:.0f} export_per_s={finished / export_s:.0f} peak_rss_mb={peak:.0f} "
          f"growth_after_warmup_mb={growth:.0f} resume_first_sample_s={resume_first_s:.2f} resume_total_s={resume_total_s:.1f}")


if __name__ == "__main__":
    main()
