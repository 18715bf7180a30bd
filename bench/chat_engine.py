"""ChatEngine (mmat's engine as a library) against the engine wired by hand, on a loopback server.

A fake OpenAI server (tests/fakes/openai_server.py, in its own process) answers every chat
completion after a fixed latency L; N rows go through each client at C calls in flight, so the
physical limit is N*L/C seconds. Each client runs in its own subprocess (its CPU is its own):

- ``wired``: the engine as bench/throughput.py wires it from the internal modules (build_client,
  the SQLite cache, the build's garbage-collector policy, 2C requests fed at once): what a user
  had to write before ChatEngine;
- ``chat``: ``ChatEngine("openai", ..., concurrency=C, cache=DIR).run(rows)``, text rows;
- ``chat-rerun``: the same rows again through a new engine on the same cache (timed: the rerun);
- ``chat-images``: rows that each carry a distinct 32x32 PNG given as bytes.

    python bench/chat_engine.py            # N=10,000, C=128, L=200 ms
    python bench/chat_engine.py --quick    # N=2,000, C=64
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from throughput import run_mmat, server_stats, start_server


def image_rows(n: int) -> list[dict[str, Any]]:
    """n rows, each with its own small PNG (as bytes): no two share a cache key."""
    from PIL import Image

    rows = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (i % 256, (i // 256) % 256, 7)).save(buffer, format="PNG")
        rows.append({"prompt": f"request {i}", "images": [buffer.getvalue()]})
    return rows


def chat_engine(base: str, c: int, cache: str) -> Any:
    """A ChatEngine on the fake server (made before the clock starts: finding the backend's plugin
    is a one-time cost, as imports are)."""
    from mmat_core import ChatEngine

    return ChatEngine("openai", model="gpt-4o", base_url=base, api_key_env=None, cache=cache, concurrency=c,
                      progress=False)


def run_chat(engine: Any, rows: list[Any]) -> tuple[list[str], dict[str, Any]]:
    """Answer ``rows`` and close the engine (its last cache writes are committed inside the timed run)."""
    with engine:
        answers = engine.run(rows)
    return [a.text or "" for a in answers], answers.summary.model_dump()


def client_main(args: argparse.Namespace) -> None:
    """Run one client in this subprocess; print its measurements as JSON."""
    base = f"http://127.0.0.1:{args.port}/v1"
    import aiohttp  # noqa: F401  (imports are a one-time cost: loaded before the clock starts)
    import mmat_plugins.llms.openai_backend  # noqa: F401

    import mmat_core.chat  # noqa: F401

    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[Any] = image_rows(args.n) if args.client == "chat-images" else [f"request {i}" for i in range(args.n)]
        if args.client == "chat-rerun":
            run_chat(chat_engine(base, args.c, tmp), rows)  # fills the cache; the rerun below is what is timed
        engine = chat_engine(base, args.c, tmp) if args.client != "wired" else None
        before = server_stats(args.port)["requests"]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if engine is None:
            answers = asyncio.run(run_mmat(base, args.n, args.c))
        else:
            answers, summary = run_chat(engine, rows)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        server_saw = server_stats(args.port)["requests"] - before
    expected = {f"echo: request {i}" for i in range(args.n)}
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "all_answered": set(answers) == expected, "summary": summary, "server_saw": server_saw}))


def measure(client: str, port: int, n: int, c: int) -> dict[str, Any]:
    """One client in a subprocess (it counts the requests the server saw during its timed part)."""
    out = subprocess.run([sys.executable, __file__, "--client", client, "--port", str(port), "-n", str(n), "-c", str(c)],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{client} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark; print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000, C=64 (under a minute)")
    parser.add_argument("-n", type=int)
    parser.add_argument("-c", type=int)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    n = args.n or (2_000 if args.quick else 10_000)
    c = args.c or (64 if args.quick else 128)
    limit = n * args.latency / c
    proc, port = start_server(args.latency)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for client in ("wired", "chat", "chat-rerun", "chat-images"):
            rows[client] = measure(client, port, n, c)
    finally:
        proc.kill()
    wired = rows["wired"]
    targets = {
        "wired": "(the baseline)",
        "chat": f"eff >= 0.90, vs wired >= 0.95, CPU <= {1.5 * wired['cpu_s'] / n * 1000:.2f} (1.5x wired)",
        "chat-rerun": "0 requests, all answered",
        "chat-images": "eff >= 0.85, all answered",
    }
    print(f"ChatEngine: N={n} C={c} L={args.latency * 1000:.0f} ms; physical limit N*L/C = {limit:.2f} s")
    print(f"{'client':<12} {'wall s':>7} {'efficiency':>10} {'vs wired':>8} {'CPU ms/row':>10} {'peak MB':>8} "
          f"{'server saw':>10} {'answered':>8}  target")
    for name, row in rows.items():
        eff = limit / row["wall_s"]
        print(f"{name:<12} {row['wall_s']:>7.2f} {eff:>10.2f} {wired['wall_s'] / row['wall_s']:>8.2f} "
              f"{row['cpu_s'] / n * 1000:>10.3f} {row['peak_mb']:>8.0f} {row['server_saw']:>10} "
              f"{row['all_answered']!s:>8}  {targets[name]}")
    chat, rerun, images = rows["chat"], rows["chat-rerun"], rows["chat-images"]
    result = {
        "n": n, "c": c, "limit_s": round(limit, 3),
        "wired_eff": round(limit / wired["wall_s"], 3), "wired_cpu_ms": round(wired["cpu_s"] / n * 1000, 3),
        "chat_eff": round(limit / chat["wall_s"], 3), "chat_vs_wired": round(wired["wall_s"] / chat["wall_s"], 3),
        "chat_cpu_ms": round(chat["cpu_s"] / n * 1000, 3), "chat_cpu_ratio": round(chat["cpu_s"] / wired["cpu_s"], 2),
        "chat_requests": chat["server_saw"],
        "rerun_requests": rerun["server_saw"], "rerun_s": round(rerun["wall_s"], 3),
        "rerun_cached": rerun["summary"].get("cached", 0),
        "images_eff": round(limit / images["wall_s"], 3), "images_cpu_ms": round(images["cpu_s"] / n * 1000, 3),
        "all_answered": int(all(row["all_answered"] for row in rows.values())),
    }
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
