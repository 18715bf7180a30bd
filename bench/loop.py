"""Full rationale-loop throughput against the fake VLM with 200 ms latency.

    .venv/bin/python bench/loop.py          # 2,000 samples
    .venv/bin/python bench/loop.py --quick  # 300 samples, under a minute

The fake VLM (tests/fakes/vlm_server.py) runs in its own process so its CPU is not counted
against the engine. Every sample takes the fake's default protocol: two steps and the final
answer, i.e. three model calls in sequence. With ``C`` samples in flight and latency ``L`` the
limit is ``C / (3 L)`` samples per second; efficiency is the measured rate over that limit.
The loop runs exactly as in a build: the ``openai`` backend over HTTP, the scheduler, the engine
client and the tool runner (no tools chosen, so the model latency is what binds).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS_PER_SAMPLE = 3


def start_fake(latency: float) -> tuple[subprocess.Popen[str], int]:
    """The fake VLM in a child process; returns it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.vlm_server", "--latency", str(latency)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING"):
        proc.kill()
        raise RuntimeError(f"the fake VLM did not start: {line!r}")
    return proc, int(line.split()[1])


async def run_loop(base_url: str, samples: int, concurrency: int, image: Path) -> tuple[float, int, int]:
    """Seconds for ``samples`` samples with ``concurrency`` in flight; (seconds, kept, failed)."""
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.rationale import LoopSettings, RationaleLoop
    from mmat_core.engine.scheduler import Scheduler, SchedulerSettings
    from mmat_core.engine.tools import ToolRunner
    from mmat_core.images import ImageStore, image_ref_from_file
    from mmat_core.models import Provenance, SourceSample, Trace
    from tests.fakes.vlm_server import vlm_backend

    images = ImageStore()
    backend = vlm_backend(base_url)
    client = EngineClient(backend, Scheduler(SchedulerSettings(concurrency=concurrency * 2)), images)
    runner = ToolRunner([], images, llm=client)
    loop = RationaleLoop(client, runner, None, LoopSettings(max_turns=8))
    ref = image_ref_from_file(image)
    gate = asyncio.Semaphore(concurrency)
    statuses: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            sample = SourceSample(id=f"bench/{i}", source="bench", question=f"Question number {i}?", answers=["x"],
                                  images=[ref])
            trace = Trace(id=sample.id, sample=sample,
                          provenance=Provenance(mmat_version="bench", generator="fake", offline=False, source="bench"))
            await loop.run(trace)
            statuses.append(trace.status)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(samples)))
    finally:
        await backend.aclose()
        runner.close()
    seconds = time.perf_counter() - started
    return seconds, statuses.count("kept"), statuses.count("failed")


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 samples instead of 2,000")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    samples = args.samples or (300 if args.quick else 2000)

    from PIL import Image

    proc, port = start_fake(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "tiny.png"
            Image.new("RGB", (64, 64), "gray").save(image)
            seconds, kept, failed = asyncio.run(run_loop(f"http://127.0.0.1:{port}/v1", samples, args.concurrency, image))
    finally:
        proc.terminate()
        proc.wait(10)

    rate = samples / seconds
    limit = args.concurrency / (CALLS_PER_SAMPLE * args.latency)
    efficiency = rate / limit
    rows = [
        ("samples", f"{samples}", ""),
        ("concurrency (samples in flight)", f"{args.concurrency}", ""),
        ("model latency (s)", f"{args.latency:.3f}", ""),
        ("samples/s", f"{rate:.1f}", f"limit {limit:.1f} = concurrency / ({CALLS_PER_SAMPLE} calls x latency)"),
        ("efficiency vs limit", f"{efficiency:.2f}", ">= 0.80"),
        ("kept / failed", f"{kept} / {failed}", f"{samples} / 0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")
    print(f"RESULT samples={samples} concurrency={args.concurrency} latency_s={args.latency} samples_per_s={rate:.2f} "
          f"limit_per_s={limit:.2f} efficiency={efficiency:.3f} kept={kept} failed={failed}")


if __name__ == "__main__":
    main()
