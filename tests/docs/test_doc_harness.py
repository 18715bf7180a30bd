"""How the docs test runs a block: what passes, what fails and what a failure says (on small
blocks of a made-up page, in a real working copy, with real processes and a real fake server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.doc_blocks import ROOT, Block, block_environment, make_working_copy, parse_marker, report, run_block
from tests.docs.test_runnable_blocks import Services


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_working_copy(tmp_path_factory.mktemp("docs-harness") / "repo")


def block(language: str, text: str, marker: str = "run") -> Block:
    return Block(ROOT / "docs" / "page.md", 12, language, text, parse_marker(marker, 11))


def run(folder: Path, language: str, text: str, marker: str = "run", services: Services | None = None) -> str:
    """The problem of running the block ('' when it did what its marker says), or its report."""
    made = block(language, text, marker)
    outcome = run_block(made, folder, 0, block_environment(folder, services or Services(), made.marker.options.get("with")))
    return report(outcome) if outcome.problem else ""


def test_a_failing_command_is_reported_with_the_page_the_line_the_block_and_its_stderr(folder: Path) -> None:
    text = run(folder, "bash", "mmat plugins > /dev/null\nmmat validate no-such-file.jsonl\necho never\n")
    assert text.startswith("docs/page.md:12 (bash block, doc-test: run): exit status 2, expected 0")
    assert "--- block ---\nmmat plugins > /dev/null\nmmat validate no-such-file.jsonl" in text
    assert "'no-such-file.jsonl' does not exist" in text.split("--- stderr (tail) ---")[1]


def test_mmat_and_the_venv_path_are_the_mmat_under_test(folder: Path) -> None:
    assert run(folder, "bash", "test \"$(command -v mmat)\" = \"$PWD/.venv/bin/mmat\"\n.venv/bin/mmat recipes\n") == ""


def test_a_block_runs_in_a_copy_of_the_repository_without_its_history(folder: Path) -> None:
    assert run(folder, "bash", "test -f plugins/sources/sample_data/samples.jsonl\ntest ! -e .git\n") == ""


def test_api_keys_of_the_caller_do_not_reach_a_block(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-looking-key")
    assert run(folder, "bash", 'test -z "${OPENAI_API_KEY:-}"\n') == ""


def test_an_expected_exit_status_passes_and_another_fails(folder: Path) -> None:
    assert run(folder, "bash", "mmat validate missing.jsonl\n", "run exit=2") == ""
    assert "exit status 0, expected 2" in run(folder, "bash", "true\n", "run exit=2")


def test_a_python_block_runs_with_the_working_copy_first_on_the_path(folder: Path) -> None:
    assert run(folder, "python", "import mmat_core, os\nassert os.path.exists('README.md')\n") == ""
    assert "ZeroDivisionError" in run(folder, "python", "1 / 0\n")


def test_a_console_block_runs_its_commands_not_its_output(folder: Path) -> None:
    assert run(folder, "console", "$ mmat recipes\nthis line is output\n") == ""


def test_a_server_block_passes_once_it_prints_the_text_and_is_then_stopped(folder: Path) -> None:
    script = "import time\nprint('serving on 8765', flush=True)\ntime.sleep(600)\n"
    assert run(folder, "python", script, 'run until="serving on" timeout=30') == ""


def test_a_server_block_that_exits_without_the_text_fails(folder: Path) -> None:
    assert "before printing 'serving on'" in run(folder, "bash", "echo starting\n", 'run until="serving on"')


def test_a_block_past_its_timeout_fails_with_how_to_mark_it(folder: Path) -> None:
    assert "did not finish in 1 s" in run(folder, "bash", "sleep 30\n", "run timeout=1")


def test_a_block_with_the_fake_openai_server_reaches_it(folder: Path) -> None:
    script = """
import json, os, urllib.request
request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", method="POST",
    data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as answer:
    assert answer.status == 200
"""
    services = Services()
    try:
        assert run(folder, "python", script, "run with=fake-openai", services) == ""
    finally:
        for server in services.servers:
            server.stop()
