"""Every model request sent is counted, re-asks apart, and the counts agree with what the server
saw: run.json, engine.json and the `mmat build` summary, against the real fake OpenAI server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.llm.conftest import protocol_reply


def not_a_step(request: RecordedRequest) -> Reply:
    """Prose where a JSON step is asked for (real models do this); the protocol otherwise."""
    if "response_format" in (request.body or {}):
        return Reply.text("Looking at the picture, I would say it is white.")  # type: ignore[call-arg]
    return protocol_reply(request)


def build(server: FakeOpenAIServer, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mmat build` of three bundled samples against the fake server, in a subprocess."""
    args = ["build", "--llm", "openai", "--model", "gpt-4o", "--set", f"llm.base_url={server.base_url}",
            "--limit", "3", "--tools", "", "--critics", "answer_match", "--formatters", "rr", "--set", "search=null",
            "--set", "llm_engine.backoff_base_s=0", "--set", "llm_engine.progress=false", "--out", str(out), *extra]
    return subprocess.run([sys.executable, "-m", "mmat_core", *args], capture_output=True, text=True, timeout=300, check=False)


def test_every_request_the_server_saw_is_counted_with_re_asks_apart(openai_server: FakeOpenAIServer, tmp_path: Path) -> None:
    openai_server.responder = not_a_step
    openai_server.queue(Reply.server_error())  # one 5xx, retried: it reached the server too
    result = build(openai_server, tmp_path / "run", "--min-yield", "0")
    assert result.returncode == 0, result.stderr
    seen = len(openai_server.completions())
    # Per sample: the loop asks 3 times (2 repairs), and the backend re-asks each reply once for its schema.
    assert seen == 3 * 3 * 2 + 1
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["counts"]
    assert counts["model_calls"] == seen
    assert counts["model_reasks"] == 3 * 5
    assert json.loads((tmp_path / "run" / "engine.json").read_text())["calls_made"] == seen
    assert f"{seen} model calls made (15 re-asks)" in result.stdout
    assert f"model calls: {seen} made (15 re-asks)" in result.stdout


def test_a_build_that_keeps_nothing_fails_with_its_top_reasons_and_keeps_its_outputs(
        openai_server: FakeOpenAIServer, tmp_path: Path) -> None:
    openai_server.responder = not_a_step
    result = build(openai_server, tmp_path / "run")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: kept 0 of 3 finished sample(s)") and "malformed_step 3" in error
    assert {"rr.jsonl", "run.json", "quarantine.jsonl"} <= {p.name for p in (tmp_path / "run").iterdir()}


def test_min_yield_as_a_share_fails_a_run_below_it(openai_server: FakeOpenAIServer, tmp_path: Path) -> None:
    openai_server.responder = protocol_reply
    ok = build(openai_server, tmp_path / "ok", "--min-yield", "100%")
    assert ok.returncode == 0, ok.stderr
    openai_server.responder = not_a_step
    low = build(openai_server, tmp_path / "low", "--min-yield", "0.5")
    assert low.returncode == 2 and "fewer than --min-yield (50% of 3 finished)" in low.stderr
