"""The Ray executor on a real multi-node Ray cluster on this machine, against a fake model server.

Starts a Ray head (no CPUs: the driver, the limit authority and the cache service live there) and
two worker nodes, each its own raylet and process group (``ray start --block`` on 127.0.0.1,
token authentication with a token made for this run), and the fake OpenAI server
(tests/fakes/openai_server.py, in this process) answering every call after a fixed latency L
with the MMAT step protocol (3 calls a sample). Then, with the generated source and the stub OCR:

- scaling: the same build with 1, 2 and 4 workers of C samples each; throughput is the rate of
  model calls the server saw between its 10th and 90th percentile request (the steady state,
  without the workers' start-up), against the physical limit n*C/L calls/s (N*L/(n*C) seconds);
- one cluster-wide rpm limit with 1 and 4 workers (no burst): requests per minute the server saw
  between its 10th and 90th percentile request;
- a worker node killed (kill -9 of its ``ray start`` process and every descendant) mid-run at 4 workers: the run
  completes with outputs byte-identical to the undisturbed 4-worker build, nothing lost or
  duplicated; requests the server answered twice are split into calls in flight at the kill
  (their answer never reached a worker) and cached calls repeated (answered well before it);
- a resume of that run with 2 workers after its store is deleted: new requests (cached calls repeated);
- the stub OCR (2 ms of CPU a call) as one shared service for 4 workers (offline backend, 50 ms a
  call, a made-up image per row so that no OCR call is cached): calls, batch sizes and the
  replica's utilisation.

``--quick`` makes the same measurements, smaller (32 samples a build, 16 for the rpm builds), on
one set of actors: every build runs with the executor's ``reuse_workers``, so the workers, the
limit authority and the cache service start once (the service build goes first and starts all
four workers) and each later build only opens its engine in them; under a minute here.

    .venv/bin/python bench/cluster.py --quick
    .venv/bin/python bench/cluster.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RAY = str(Path(sys.executable).with_name("ray"))
OUTPUTS = ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")
CALLS_PER_SAMPLE = 3
#: The image every generated row shows (made in the bench's temporary folder, visible to every node).
IMAGE = Path()


def token_auth(tmp: Path) -> None:
    """Token authentication with a token made for this run (before Ray is imported: it reads the
    mode then), for this process and the nodes it starts."""
    token = tmp / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")


class Cluster:
    """A Ray head and worker nodes on this machine, each ``ray start --block`` in its own session."""

    def __init__(self, tmp: Path, nodes: int, cpus: int) -> None:
        self.tmp = tmp
        # Workers import the stub plugins (tests/) from the repository.
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        self.port = 6500 + os.getpid() % 500
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        started = time.monotonic()
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                             f"--temp-dir={tmp / 'ray'}",
                             # A dead node is noticed after about two seconds, not thirty.
                             '--system-config={"health_check_period_ms":500,"health_check_failure_threshold":4}'])
        self._wait(["head"])
        for k in range(nodes):
            self._start_node(k, cpus)
        self.start_s = time.monotonic() - started

    def _start_node(self, k: int, cpus: int, attempts: int = 3) -> None:
        # One at a time (started together, two raylets race for ports this bench does not set),
        # each with ports of its own; a raylet that still lost a port race is started again.
        for attempt in range(attempts):
            base = 21000 + (os.getpid() % 40) * 200 + k * 20 + attempt * 7
            self._start(f"node{k}", [f"--address=127.0.0.1:{self.port}", f"--num-cpus={cpus}", f"--node-manager-port={base}",
                                     f"--object-manager-port={base + 1}", f"--dashboard-agent-listen-port={base + 2}",
                                     f"--dashboard-agent-grpc-port={base + 3}", f"--runtime-env-agent-port={base + 4}",
                                     f"--metrics-export-port={base + 5}", f"--min-worker-port={30000 + k * 1000 + (os.getpid() % 10) * 100}",
                                     f"--max-worker-port={30000 + k * 1000 + (os.getpid() % 10) * 100 + 99}",
                                     f"--resources={json.dumps({f'node{k}': 1})}"])
            try:
                self._wait([f"node{k}"])
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                if self.procs[f"node{k}"].poll() is None:
                    os.killpg(self.procs[f"node{k}"].pid, signal.SIGKILL)

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until killed
        self.procs[name] = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1",
                                             "--disable-usage-stats", *args],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait(self, names: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = {n: (self.tmp / f"{n}.log").read_text(errors="replace") for n in names}
            if all("block forever" in text for text in logs.values()):
                return
            for name in names:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"ray node {name} failed to start:\n{logs[name][-2000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"ray nodes {names} did not start within {timeout:g}s")

    def kill(self, name: str) -> None:
        """kill -9 every process of one node: the ``ray start`` process and all its descendants
        (the raylet, its agents, its Ray workers: not every worker stays in the raylet's process
        group, and a worker that outlives its raylet finishes its tasks, which is no lost node)."""
        parents: dict[int, int] = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces
                    parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass  # gone already
        family = {self.procs[name].pid}
        grew = True
        while grew:
            before = len(family)
            family |= {pid for pid, parent in parents.items() if parent in family}
            grew = len(family) > before
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Kill every node this bench started (never ``ray stop``: other Ray clusters may run here)."""
        for proc in reversed(list(self.procs.values())):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def protocol_responder(latency: float) -> Any:
    """Answers like a model following the MMAT step protocol, deterministically from the request."""
    import re

    from tests.fakes.openai_server import Reply

    def answer(request: Any) -> Any:
        messages = (request.body or {}).get("messages", [])
        first_user = next(m for m in messages if m["role"] == "user")
        text = first_user["content"] if isinstance(first_user["content"], str) else " ".join(
            p.get("text", "") for p in first_user["content"] if p.get("type") == "text")
        item = int(re.search(r"\(item (\d+)\)", text).group(1))  # type: ignore[union-attr]
        if request.user_text().startswith("Based on the above information"):
            return Reply.text(str(item % 97))  # type: ignore[call-arg]
        steps = sum(1 for m in messages if m["role"] == "assistant")
        step = {"thought": f"Step {steps + 1} on item {item}.", "operators": ["ocr"] if steps == 0 else [],
                "rag": {"needed": False, "query": None}, "next_action": "continue" if steps == 0 else "final_answer"}
        return Reply.text(json.dumps(step))  # type: ignore[call-arg]

    return answer


def body_key(request: Any) -> str:
    return hashlib.sha256(json.dumps((request.body or {}).get("messages", []), sort_keys=True).encode()).hexdigest()


def build(out: Path, base_url: str, count: int, executor: dict[str, Any], llm_engine: dict[str, Any] | None = None,
          ocr: dict[str, Any] | None = None, offline: bool = False) -> Any:
    """One build of the generated source (every row shows one real image) into ``out``."""
    from mmat_core import Pipeline
    from mmat_core.config import load_config
    from mmat_core.plugins import PluginManager, set_plugin_manager
    from tests.scale import plugin as stubs

    manager = PluginManager(block=["tools"])
    manager.register(stubs, "scale-stubs")  # registered in code: sent to the workers
    set_plugin_manager(manager)
    config = load_config(None, {
        # The offline run gives every row its own (made-up) image, so no tool call is cached.
        "source": {"name": "generated", "count": count, "reject_every": 17, **({} if offline else {"image": str(IMAGE)})},
        "llm": ({"name": "counting_offline", "delay_s": 0.05} if offline else
                {"name": "openai", "model": "fake-vlm", "base_url": base_url, "api_key_env": None}),
        "llm_engine": {"progress": False, "concurrency": 512, "timeout_s": 30, **(llm_engine or {})},
        "tools": [{"name": "ocr", **(ocr or {})}], "critics": ["answer_match"], "search": None, "formatters": ["rr", "orr"],
        "engine": {"final_answer": "model"},
        "executor": {"name": "ray", "address": "auto", **executor},
    })
    return Pipeline.from_config(config, plugins=manager).run(out)


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of this machine's CPUs so far (/proc/stat)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def window_rate(times: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Requests per second between the ``low`` and ``high`` quantiles of their arrival times."""
    times = sorted(times)
    if len(times) < 10:
        return float("nan")
    a, b = int(low * (len(times) - 1)), int(high * (len(times) - 1))
    return (b - a) / max(1e-9, times[b] - times[a])


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the same measurements, smaller: fewer samples, worker actors reused across builds")
    parser.add_argument("--latency", type=float, default=0.25, help="seconds the server takes per call (L)")
    parser.add_argument("--per-worker", type=int, default=4, help="samples in flight per worker (C)")
    args = parser.parse_args()
    bench_started = time.monotonic()  # the wall time reported covers everything from here
    samples = 32 if args.quick else 240
    rpm = 600
    rpm_samples = 16 if args.quick else 120
    latency, c = args.latency, args.per_worker
    # --quick: one set of worker actors serves every build (the executor's reuse_workers), so a
    # build pays no worker start-up; the offline service build goes first and starts all four.
    reuse = {"reuse_workers": True} if args.quick else {}

    tmp = Path(tempfile.mkdtemp(prefix="mmat-cluster-"))
    token_auth(tmp)
    global IMAGE
    from PIL import Image

    IMAGE = tmp / "receipt.png"
    Image.new("RGB", (32, 24), "white").save(IMAGE)
    import ray

    from tests.fakes.openai_server import FakeOpenAIServer

    rows: list[tuple[str, str, str]] = []
    result: dict[str, Any] = {}
    cluster = Cluster(tmp, nodes=2, cpus=2)
    server = FakeOpenAIServer(latency=latency, record_bodies=False)
    server.responder = protocol_responder(latency)
    server.start()
    try:
        print(f"cluster up in {cluster.start_s:.1f} s ({tmp})", file=sys.stderr, flush=True)
        ray.init(address=f"127.0.0.1:{cluster.port}", log_to_driver=False)
        rows.append(("cluster start (head + 2 worker nodes)", f"{cluster.start_s:.1f} s", ""))

        def run(name: str, executor: dict[str, Any], count: int, llm_engine: dict[str, Any] | None = None,
                during: Any = None, ocr: dict[str, Any] | None = None, offline: bool = False) -> tuple[Any, list[Any], float]:
            first = len(server.requests)
            started = time.monotonic()
            print(f"  {name}: {executor}", file=sys.stderr, flush=True)
            if during is None:
                res = build(tmp / name, server.base_url, count, executor, llm_engine, ocr, offline)
            else:
                import threading

                box: dict[str, Any] = {}
                thread = threading.Thread(target=lambda: box.update(r=build(tmp / name, server.base_url, count, executor, llm_engine)))
                thread.start()
                during()
                thread.join()
                res = box["r"]
            return res, server.requests[first:], time.monotonic() - started

        def service() -> list[tuple[str, str, str]]:
            # The OCR (a stub costing 2 ms of CPU a call) as one shared service for 4 workers; the
            # offline backend (50 ms a call) and a made-up image per row, so every OCR call is new.
            served, _, _ = run("served", {"workers": 4, "samples_per_worker": c, **reuse,
                                          "tool_services": {"ocr": {"replicas": 1, "max_batch": 16, "max_wait_ms": 5}}},
                               samples * 2, ocr={"cost_ms": 2}, offline=True)
            (replica,) = served.engine["tool_services"]["ocr"]
            result.update(service_mean_batch=replica["mean_batch"], service_largest_batch=replica["largest_batch"],
                          service_utilisation=replica["utilisation"])
            return [("OCR as one service for 4 workers: calls, batches", f"{replica['calls']}, {replica['batches']}", ""),
                    ("  batch size: mean / largest", f"{replica['mean_batch']} / {replica['largest_batch']}", "> 1 (batched)"),
                    ("  replica utilisation (busy / lifetime)", f"{replica['utilisation']:.1%}", "reported")]

        service_rows = service() if args.quick else []

        # Scaling of an I/O-bound build.
        rates = {}
        for n in (1, 2, 4):
            busy0, total0 = cpu_times()
            _, reqs, wall = run(f"scale{n}", {"workers": n, "samples_per_worker": c, **reuse}, samples)
            busy1, total1 = cpu_times()
            rates[n] = window_rate([r.received for r in reqs])
            limit = n * c / latency
            cpu = (busy1 - busy0) / max(1.0, total1 - total0)
            rows.append((f"{n} worker(s) x {c} in flight: model calls/s", f"{rates[n]:.1f} (wall {wall:.1f} s)",
                         f"limit {limit:.1f} (N*L/(n*C))"))
            rows.append(("  machine CPU busy during the run (other work included)", f"{cpu:.0%}", "context"))
            result[f"cpu_busy_{n}"] = round(cpu, 2)
        for n in (2, 4):
            ratio = rates[n] / (n * rates[1])
            rows.append((f"scaling 1 -> {n} workers, share of linear", f"{ratio:.2f}", ">= 0.90"))
            result[f"scaling_{n}"] = round(ratio, 3)
        result["calls_per_s_4"] = round(rates[4], 1)

        rows.extend(service_rows or service())

        # One cluster-wide rpm limit.
        for n in (1, 4):
            _, reqs, _ = run(f"rpm{n}", {"workers": n, "samples_per_worker": c, **reuse}, rpm_samples,
                             {"rpm": rpm, "rate_burst_s": 0.1})
            # No burst (a tenth of a second of quota is one request); the steady state between
            # the start of the workers and the last stragglers.
            seen = window_rate([r.received for r in reqs]) * 60
            off = abs(seen - rpm) / rpm
            rows.append((f"rpm limit {rpm}, {n} worker(s): requests/min seen", f"{seen:.0f} ({off:.1%} off)", "within 2%"))
            result[f"rpm_off_{n}"] = round(off, 4)

        # A worker node killed mid-run.
        kill_at = {}

        def killer() -> None:
            # A quick build is short: the node dies earlier in it, while its workers hold batches.
            target = samples * CALLS_PER_SAMPLE // (4 if args.quick else 3)
            first = len(server.requests)
            while len(server.requests) - first < target:
                time.sleep(0.05)
            kill_at["t"] = time.monotonic()
            cluster.kill("node1")

        killed, reqs, wall = run("killed", {"workers": 4, "samples_per_worker": c, **reuse}, samples, during=killer)
        same = all((tmp / "killed" / f).read_bytes() == (tmp / "scale4" / f).read_bytes() for f in OUTPUTS)
        ids = [json.loads(line)["id"] for line in (tmp / "killed" / "rr.jsonl").read_text().splitlines()]
        expected = len((tmp / "scale4" / "rr.jsonl").read_text().splitlines())
        answered: dict[str, list[Any]] = {}
        for r in reqs:
            if r.status == 200:
                answered.setdefault(body_key(r), []).append(r)
        repeats = [v for v in answered.values() if len(v) > 1]
        # A call answered twice was paid twice; it was a cached call only if its first answer
        # came back well before the node died (the put leaves the worker as the answer arrives).
        cached_repeats = sum(1 for v in repeats if v[0].received + latency < kill_at["t"] - 0.5)
        in_flight_repeats = len(repeats) - cached_repeats
        lost = expected - len(set(ids))
        duplicated = len(ids) - len(set(ids))
        lost_workers, requeued = killed.manifest.counts.get("workers_lost", 0), killed.manifest.counts.get("samples_requeued", 0)
        rows.append(("node killed at 4 workers: run completed",
                     f"yes ({wall:.1f} s, {lost_workers} workers lost, {requeued} samples re-queued)",
                     "completes, workers lost > 0"))
        rows.append(("  outputs byte-identical to the undisturbed run", "yes" if same else "NO", "yes"))
        rows.append(("  samples lost / duplicated", f"{lost} / {duplicated}", "0 / 0"))
        rows.append(("  cached calls repeated", str(cached_repeats), "0"))
        rows.append(("  calls in flight at the kill, asked again", str(in_flight_repeats), "(unavoidable)"))
        result.update(kill_workers_lost=lost_workers, kill_identical=int(same), kill_lost=lost, kill_duplicated=duplicated,
                      kill_cached_repeated=cached_repeats, kill_inflight_repeated=in_flight_repeats)

        # Resume with another worker count after the store is gone: every call is in the cache.
        for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "run.json"):
            (tmp / "killed" / name).unlink(missing_ok=True)
        _, reqs, _ = run("killed", {"workers": 2, "samples_per_worker": c, **reuse}, samples)
        repeated = sum(1 for r in reqs if r.status == 200)
        rows.append(("resume with 2 workers (store deleted): cached calls repeated", str(repeated), "0"))
        result["resume_cached_repeated"] = repeated
    finally:
        try:
            ray.shutdown()
        finally:
            server.stop()
            cluster.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    wall_s = time.monotonic() - bench_started
    rows.append(("bench wall time (cluster start included)", f"{wall_s:.0f} s", "< 60 s with --quick" if args.quick else ""))
    result["wall_s"] = round(wall_s, 1)
    print(f"bench/cluster.py: {samples} samples x {CALLS_PER_SAMPLE} calls, L={latency:g} s, C={c} per worker, "
          f"{os.cpu_count()} CPUs{' (quick: worker actors reused across builds)' if args.quick else ''}")
    print(f"{'measure':<62} {'value':>34}   target")
    for name, value, target in rows:
        print(f"{name:<62} {value:>34}   {target}")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
