"""kill -9 at random moments, ten times in a row, resuming each time: the final outputs are
byte-identical to an uninterrupted run, no sample is lost or duplicated, and no model call whose
result had reached the cache is ever made again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scale.conftest import STUB_BUILD, cached_model_keys, mmat_command, read_jsonl, run_mmat

COUNT = 200
#: Each call waits a little so a run lasts long enough to be killed at many different points.
BUILD = [*STUB_BUILD, "--set", f"source.count={COUNT}", "--set", "source.reject_every=9",
         "--set", "llm.delay_s=0.03", "--set", "engine.concurrency=8"]
OUTPUTS = ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")


def logged_keys(log: Path) -> list[str]:
    """Cache keys of the calls the backend really answered, in order."""
    return [line.split("\t")[2] for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(process: subprocess.Popen[bytes], condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll until ``condition`` holds, the process ends, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.mark.slow
def test_ten_kill9s_then_resume_give_the_uninterrupted_outputs(stub_env: dict[str, str], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    env = {**stub_env, "MMAT_TEST_CALL_LOG": str(tmp_path / "reference.log")}
    done = run_mmat("build", "--out", str(reference), *BUILD, env=env)
    assert done.returncode == 0, done.stderr
    reference_calls = logged_keys(tmp_path / "reference.log")

    out = tmp_path / "killed"
    rng = random.Random(20260709)
    repeated_completed_calls: list[str] = []
    all_calls: list[str] = []
    kills = 0
    for attempt in range(11):
        cached_before = cached_model_keys(out)
        log = tmp_path / f"attempt{attempt}.log"
        env = {**stub_env, "MMAT_TEST_CALL_LOG": str(log)}
        args = ["build", "--out", str(out), *BUILD] if attempt == 0 else ["build", "--resume", str(out)]
        process = subprocess.Popen(mmat_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt < 10:
            # A random moment, chosen by progress rather than by the clock (so a busy or an idle
            # machine both give kills): during start-up, or after a random number of model calls.
            if rng.random() < 0.2:
                wait_for(process, lambda: False, timeout_s=rng.uniform(0.05, 0.5))
            else:
                threshold = rng.randint(1, 60)
                wait_for(process, lambda: len(logged_keys(log)) >= threshold, timeout_s=60)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
            process.wait()
        else:
            assert process.wait(timeout=120) == 0, process.stderr.read().decode() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        calls = logged_keys(log)
        all_calls += calls
        repeated_completed_calls += [key for key in calls if key in cached_before]

    assert kills >= 8  # moments chosen by progress: nearly every attempt hits a running build
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    ids = [record["id"] for record in read_jsonl(out / "rr.jsonl")]
    assert len(ids) == len(set(ids)) == len(read_jsonl(reference / "rr.jsonl"))
    assert repeated_completed_calls == []
    # Every call the reference made was made in the interrupted runs too, and nothing else.
    assert set(all_calls) == set(reference_calls)
    assert not [key for key, n in Counter(reference_calls).items() if n > 1]
