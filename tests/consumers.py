"""The consumers' own environments (ms-swift, LLaMA-Factory, lmms-eval), for tests that feed them mmat's output.

Each consumer lives in its own virtual environment under `.consumers/<name>/`, built by
`scripts/consumer_envs.sh` (their pins disagree with each other and with mmat's). A test asks for
one with `consumer_python(name)`: without it the test is skipped with the command that builds it,
unless `MMAT_REQUIRE_CONSUMERS=1` (set by `.ci/run`), where a missing environment is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSUMERS = ROOT / ".consumers"
NAMES = ("swift", "llamafactory", "lmms")


def consumer_python(name: str) -> Path:
    """The python of consumer environment `name`; skips (or fails under MMAT_REQUIRE_CONSUMERS=1) when absent."""
    if name not in NAMES:
        raise ValueError(f"unknown consumer environment {name!r}; allowed: {', '.join(NAMES)}")
    python = CONSUMERS / name / "bin" / "python"
    if python.is_file() and (CONSUMERS / name / ".ready").is_file():
        return python
    message = f"consumer environment {name!r} is not built: run scripts/consumer_envs.sh {name}"
    if os.environ.get("MMAT_REQUIRE_CONSUMERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_in_consumer(name: str, script: str, *args: str, cwd: Path | None = None, timeout: float = 600,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `script` (Python source) with the consumer's python; returns the finished process (never raises on rc)."""
    python = consumer_python(name)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONPATH": "", **(env or {})}
    return subprocess.run([str(python), "-c", script, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
