"""Throughput of mmat's model-call engine against a loopback OpenAI-compatible server.

A fake server (tests/fakes/openai_server.py, in its own process so its CPU is not the client's)
answers every chat completion after a fixed latency L. N requests go through each client at
concurrency C; the physical limit is N*L/C seconds. Each client runs in its own subprocess, so its
CPU time and peak memory are its own:

- ``raw``: a bare aiohttp loop with a semaphore: the practical floor of client cost here;
- ``sdk``: the official ``openai.AsyncOpenAI`` with its default transport (httpx2);
- ``sdk-aiohttp``: the official client on its aiohttp transport (``DefaultAioHttpClient``);
- ``mmat``: mmat's engine as ``mmat build`` sets it up (build_client, the run's SQLite cache):
  EngineClient -> cache -> Scheduler -> the openai backend.

Raw and mmat run back to back, on the same server, with the same N and C. Then N=2,000 more
(at C=256 in both settings) go through mmat's engine with 10% of replies a 429: every request
must complete, and none may be answered twice.

    python bench/throughput.py            # N=20,000, C=256, L=200 ms
    python bench/throughput.py --quick    # N=2,000, C=64 (official-client baselines: N=500)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_server(latency: float, fault_rate: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    """Start the fake server in its own process; return it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency),
                             "--fault-rate", str(fault_rate), "--retry-after", "0.05"],
                            cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("LISTENING"):
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, int(line.split()[1])


def server_stats(port: int) -> dict[str, Any]:
    """The fake server's counters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats") as response:
        return json.loads(response.read())


def body(i: int) -> dict[str, Any]:
    """The i-th request body (each unique, so answers can be matched to requests)."""
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": f"request {i}"}]}


async def run_raw(base: str, n: int, c: int) -> list[str]:
    import aiohttp

    semaphore = asyncio.Semaphore(c)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i: int) -> str:
            async with semaphore:
                async with session.post(f"{base}/chat/completions", json=body(i)) as response:
                    return (await response.json())["choices"][0]["message"]["content"]
        return await asyncio.gather(*(one(i) for i in range(n)))


async def run_sdk(base: str, n: int, c: int, aio: bool) -> list[str]:
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0,
                                http_client=openai.DefaultAioHttpClient() if aio else None)
    semaphore = asyncio.Semaphore(c)

    async def one(i: int) -> str:
        async with semaphore:
            completion = await client.chat.completions.create(**body(i))
            return completion.choices[0].message.content or ""
    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


async def run_mmat(base: str, n: int, c: int) -> list[str]:
    from mmat_plugins.llms.openai_backend import OpenAIBackend

    from mmat_core.components import LLMRequest, Message
    from mmat_core.config import EngineSettings
    from mmat_core.engine.cache import Cache
    from mmat_core.engine.client import build_client
    from mmat_core.engine.gcpolicy import run_gc
    from mmat_core.engine.settings import LLMEngineSettings
    from mmat_core.images import ImageStore

    # Built the way `mmat build` builds it (mmat_core/pipeline.py): under the run's garbage-collector
    # policy (engine.gc_threshold at its default), with the run's cache, gathering writes for at
    # most a quarter of a second, and build_client's scheduler and price table. Only the retry
    # settings differ, so the 10%-429 run retries quickly.
    with tempfile.TemporaryDirectory() as tmp, run_gc(EngineSettings().gc_threshold):
        backend = OpenAIBackend(base_url=base, model="gpt-4o", api_key_env=None)
        cache = Cache(Path(tmp) / "cache.sqlite", commit_after_s=0.25)
        settings = LLMEngineSettings(concurrency=c, max_attempts=50, backoff_base_s=0.05, progress=False)
        client = build_client(backend, settings, ImageStore(), cache, Path(tmp))

        # Fed as `mmat build` feeds it: a bounded number of samples in flight (engine.concurrency),
        # each asking for its calls, never all N at once (then every request's cache lookup would
        # run before the first call went out). At 2C, calls still queue at the scheduler's
        # admission gate, which is what holds them to C in flight.
        feed = asyncio.Semaphore(2 * c)

        async def one(i: int) -> str:
            async with feed:
                request = LLMRequest(purpose="bench", messages=[Message(role="user", content=f"request {i}")])
                response, _ = await client.complete(request)
                return response.text
        try:
            return await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await client.aclose()
            await backend.aclose()
            cache.close()  # the last gathered writes are committed inside the timed run


def client_main(args: argparse.Namespace) -> None:
    """Run one client in this (sub)process and print its measurements as JSON."""
    base = f"http://127.0.0.1:{args.port}/v1"
    runner = {"raw": lambda: run_raw(base, args.n, args.c), "sdk": lambda: run_sdk(base, args.n, args.c, False),
              "sdk-aiohttp": lambda: run_sdk(base, args.n, args.c, True), "mmat": lambda: run_mmat(base, args.n, args.c)}[args.client]
    # Imports are a one-time cost, not a per-request one: load them before the clock starts.
    import aiohttp  # noqa: F401
    if args.client.startswith("sdk"):
        import openai  # noqa: F401
    if args.client == "mmat":
        import mmat_plugins.llms.openai_backend  # noqa: F401

        import mmat_core.engine.client  # noqa: F401
    cpu0, wall0 = time.process_time(), time.perf_counter()
    answers = asyncio.run(runner())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    expected = {f"echo: request {i}" for i in range(args.n)}
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "answers": len(answers), "all_answered": set(answers) == expected}))


def measure(client: str, port: int, n: int, c: int) -> dict[str, Any]:
    """Run one client in a subprocess; add the requests the server saw."""
    before = server_stats(port)["requests"]
    out = subprocess.run([sys.executable, __file__, "--client", client, "--port", str(port), "-n", str(n), "-c", str(c)],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{client} failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["server_saw"] = server_stats(port)["requests"] - before
    return data


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000, C=64 (under a minute)")
    parser.add_argument("-n", type=int)
    parser.add_argument("-c", type=int)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-sdk", action="store_true", help="leave out the official-client baselines")
    parser.add_argument("--sdk-n", type=int, help="requests for the official-client baselines "
                        "(default: N; 500 with --quick, so that it stays under a minute)")
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    n = args.n or (2_000 if args.quick else 20_000)
    c = args.c or (64 if args.quick else 256)
    # The official client spends 5 to 10 times raw's CPU per call and takes far longer: with --quick
    # it gets fewer requests (same server and concurrency, measured against its own limit N*L/C)
    # so that the whole benchmark stays under a minute.
    sdk_n = args.sdk_n or (min(n, 500) if args.quick else n)
    latency = args.latency
    limit = n * latency / c
    proc, port = start_server(latency)
    rows: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    try:
        # raw and mmat back to back: on a shared machine the load drifts, and these two are compared.
        clients = ["raw", "mmat"] if args.skip_sdk else ["raw", "mmat", "sdk", "sdk-aiohttp"]
        for client in clients:
            sizes[client] = sdk_n if client.startswith("sdk") else n
            rows[client] = measure(client, port, sizes[client], c)
    finally:
        proc.kill()
    faulty, fault_port = start_server(latency, fault_rate=0.1)
    try:
        # The same run in both settings: N=2,000 at C=256. A steady 10% of 429s holds adaptive
        # admission at its floor (a quarter of C), so at C=64 this check alone took over 20 s.
        n429, c429 = 2_000, 256
        fault_run = measure("mmat", fault_port, n429, c429)
        stats = server_stats(fault_port)
    finally:
        faulty.kill()

    raw = rows["raw"]
    print(f"Throughput: N={n} C={c} L={latency * 1000:.0f} ms; physical limit N*L/C = {limit:.2f} s")
    print(f"{'client':<13} {'N':>6} {'wall s':>8} {'efficiency':>10} {'vs raw':>7} {'CPU ms/req':>10} {'peak MB':>8} "
          f"{'server saw':>10}  target")
    for name, row in rows.items():
        size = sizes[name]
        # Each client against its own limit (size*L/C) and, for "vs raw", in requests per second.
        eff = size * latency / c / row["wall_s"]
        vs_raw = (size / row["wall_s"]) / (n / raw["wall_s"])
        cpu = row["cpu_s"] / size * 1000
        target = ""
        if name == "mmat":
            target = f"eff >= 0.90, vs raw >= 0.95, CPU <= {2 * raw['cpu_s'] / n * 1000:.2f} (2x raw)"
        elif size != n:
            target = f"(baseline; N={size} to keep --quick short)"
        print(f"{name:<13} {size:>6} {row['wall_s']:>8.2f} {eff:>10.2f} {vs_raw:>7.2f} {cpu:>10.2f} {row['peak_mb']:>8.0f} "
              f"{row['server_saw']:>10}  {target}")
    status_429 = stats["statuses"].get("429", 0)
    exactly_once = fault_run["all_answered"] and stats["ok_texts"] == n429 and stats["ok_by_text_max"] == 1
    print(f"10% 429s: N={n429} C={c429}: {fault_run['answers']} answered in {fault_run['wall_s']:.1f} s, {status_429} 429s retried, "
          f"server answered each request once: {exactly_once}  target: all complete, none twice")
    mmat = rows["mmat"]
    result = {
        "n": n, "c": c, "limit_s": round(limit, 3),
        "raw_eff": round(limit / raw["wall_s"], 3), "raw_cpu_ms": round(raw["cpu_s"] / n * 1000, 3),
        "mmat_eff": round(limit / mmat["wall_s"], 3), "mmat_vs_raw": round(raw["wall_s"] / mmat["wall_s"], 3),
        "mmat_cpu_ms": round(mmat["cpu_s"] / n * 1000, 3), "mmat_cpu_ratio": round(mmat["cpu_s"] / raw["cpu_s"], 2),
        "mmat_peak_mb": round(mmat["peak_mb"]),
    }
    for name in ("sdk", "sdk-aiohttp"):
        if name in rows:
            key = name.replace("-", "_")
            result[f"{key}_n"] = sizes[name]
            result[f"{key}_eff"] = round(sizes[name] * latency / c / rows[name]["wall_s"], 3)
            result[f"{key}_cpu_ms"] = round(rows[name]["cpu_s"] / sizes[name] * 1000, 3)
    result.update({"r429_complete": int(fault_run["all_answered"]), "r429_exactly_once": int(exactly_once),
                   "r429_count": status_429})
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
