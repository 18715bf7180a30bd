"""Every documented command runs as written: the marked blocks of README.md, CONTRIBUTING.md and
docs/**/*.md run in a temporary copy of the repository, on the bundled sample, offline (see
tests/docs/doc_blocks.py and CONTRIBUTING.md, "Runnable docs").

One test per documentation file runs its ``run`` blocks in order; each ``skip`` block is a test
of its own, skipped with its reason, so ``pytest -rs`` lists what the docs leave untested and why.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs.doc_blocks import (
    ROOT,
    SKIP_REASONS,
    Block,
    Outcome,
    block_environment,
    documentation_files,
    iter_runnable,
    make_working_copy,
    read_blocks,
    report,
    run_block,
    run_setup,
    tail,
)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _files_with_steps() -> list[Path]:
    return [path for path in documentation_files() if any(True for _ in iter_runnable(read_blocks(path)[0]))]


def _skipped_blocks() -> list[Block]:
    return [step.block for path in documentation_files() for step in read_blocks(path)[0]
            if step.block and step.block.marker and step.block.marker.verb == "skip"]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """``runs/sample`` as ``.venv/bin/mmat build --out runs/sample`` leaves it, built once per
    session on first use (the README's first command; several files start from it)."""
    built: list[Path] = []

    def get() -> Path:
        if not built:
            folder = tmp_path_factory.mktemp("sample-run")
            done = subprocess.run([str(Path(sys.executable).with_name("mmat")), "build", "--out", "runs/sample"],
                                  check=False, cwd=folder, capture_output=True, text=True, timeout=300,
                                  env=block_environment(folder, {}, None))
            assert done.returncode == 0, f"mmat build --out runs/sample failed: {tail(done.stderr)}"
            built.append(folder / "runs" / "sample")
        return built[0]

    return get


class Services(dict[str, dict[str, str]]):
    """The services a block may ask for with ``run with=NAME``, each started on first use, by
    name: the environment variables that point a block at it."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: list[Any] = []

    def __missing__(self, name: str) -> dict[str, str]:
        if name != "fake-openai":
            raise KeyError(name)
        from tests.fakes.openai_server import FakeOpenAIServer
        from tests.llm.conftest import OPENAI_TEST_KEY, protocol_reply

        server = FakeOpenAIServer().start()
        server.responder = protocol_reply
        self.servers.append(server)
        self[name] = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": OPENAI_TEST_KEY}
        return self[name]


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The fake servers blocks ask for, stopped at the end of the session."""
    started = Services()
    yield started
    for server in started.servers:
        server.stop()


@pytest.mark.parametrize("path", _files_with_steps(), ids=_name)
def test_the_runnable_blocks_of_a_file_run_as_written(path: Path, tmp_path: Path, sample_run: Callable[[], Path],
                                                     services: dict[str, dict[str, str]]) -> None:
    steps, problems = read_blocks(path)
    assert problems == [], "\n".join(problems)
    folder = make_working_copy(tmp_path / "repo")
    failures: list[str] = []
    for number, step in enumerate(iter_runnable(steps)):
        if step.setup is not None:
            problem = run_setup(step.setup, folder, block_environment(folder, {}, None), sample_run)
            if problem:
                failures.append(f"{_name(path)}:{step.setup.line}: {problem}")
                break  # what follows needs it
            continue
        block = step.block
        assert block is not None and block.marker is not None
        if block.marker.verb == "file":
            target = folder / block.marker.command
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            continue
        outcome: Outcome = run_block(block, folder, number,
                                     block_environment(folder, services, block.marker.options.get("with")))
        if outcome.problem:
            failures.append(report(outcome))
    # Later blocks may fail because an earlier one did: the first failure is the one to read.
    assert failures == [], f"{len(failures)} block(s) of {_name(path)} failed:\n\n" + "\n\n".join(failures)


@pytest.mark.parametrize("block", _skipped_blocks(), ids=lambda block: block.where)
def test_a_block_marked_skip_is_reported_with_its_reason(block: Block) -> None:
    assert block.marker is not None
    reason, _, detail = block.marker.reason.partition(" ")
    pytest.skip(f"{block.where}: {reason}: {SKIP_REASONS[reason]}" + (f" {detail}" if detail else ""))
