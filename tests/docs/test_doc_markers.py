"""The doc-test markers: every runnable block of the docs carries one, and each is read as
CONTRIBUTING.md ("Runnable docs") says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.doc_blocks import ROOT, MarkerError, console_commands, documentation_files, parse_marker, read_blocks

DOC = ROOT / "docs" / "example.md"


def steps_of(text: str) -> tuple[list[str], list[str]]:
    """(what each step is, the problems) of a documentation text."""
    steps, problems = read_blocks(DOC, text)
    described = []
    for step in steps:
        if step.setup is not None:
            described.append(f"setup {step.setup.command}")
        else:
            assert step.block is not None
            marker = step.block.marker
            described.append(f"{step.block.language}:{step.block.line}:{marker.verb if marker else '-'}")
    return described, problems


def test_every_runnable_block_of_the_docs_carries_a_marker() -> None:
    problems = [problem for path in documentation_files() for problem in read_blocks(path)[1]]
    assert problems == [], "\n".join(problems)


def test_the_docs_checked_include_the_readme_and_every_page_under_docs() -> None:
    files = documentation_files()
    assert ROOT / "README.md" in files
    assert ROOT / "docs" / "plugins" / "authoring.md" in files


def test_a_bash_block_without_a_marker_is_a_problem() -> None:
    _steps, problems = steps_of("text\n```bash\nmmat plugins\n```\n")
    assert problems == [("docs/example.md:2: a bash block without a doc-test marker on the line before its fence "
                         "(<!-- doc-test: run --> or <!-- doc-test: skip REASON -->)")]


def test_a_marker_with_a_blank_line_before_the_fence_is_a_problem() -> None:
    _steps, problems = steps_of("<!-- doc-test: run -->\n\n```bash\nmmat plugins\n```\n")
    assert problems[0] == "example.md:1: doc-test run marker not right before a fence"


def test_a_yaml_block_needs_no_marker_and_a_file_marker_writes_it() -> None:
    steps, problems = steps_of("```yaml\na: 1\n```\n<!-- doc-test: file build.yaml -->\n```yaml\nb: 2\n```\n")
    assert problems == []
    assert steps == ["yaml:5:file"]


def test_a_run_marker_before_a_yaml_block_is_a_problem_and_a_skip_marker_is_not() -> None:
    _steps, problems = steps_of("<!-- doc-test: run -->\n```yaml\na: 1\n```\n")
    assert problems == [("docs/example.md:2: a doc-test run marker before a yaml block, which is never run "
                         "(only file PATH or skip may stand there)")]
    assert steps_of("<!-- doc-test: skip illustration -->\n```yaml\na: 1\n```\n") == ([], [])


def test_a_block_inside_another_fence_is_not_a_block() -> None:
    steps, problems = steps_of("````markdown\n<!-- doc-test: run -->\n```bash\nmmat plugins\n```\n````\n")
    assert (steps, problems) == ([], [])


def test_setup_markers_stand_alone_and_run_in_document_order() -> None:
    steps, problems = steps_of("<!-- doc-test: setup sample-run -->\n<!-- doc-test: run -->\n```bash\nmmat stats runs/sample\n```\n")
    assert problems == []
    assert steps == ["setup sample-run", "bash:3:run"]


def test_a_skip_marker_needs_a_known_reason() -> None:
    with pytest.raises(MarkerError, match="one of: gpu, api-key, internet, data, long, installs, illustration"):
        parse_marker("skip because", 7)


def test_a_skip_marker_keeps_its_words() -> None:
    assert parse_marker("skip gpu the paper's 8-GPU run", 3).reason == "gpu the paper's 8-GPU run"


def test_run_options_are_read_with_shell_quoting() -> None:
    marker = parse_marker('run until="mmat viewer on" timeout=30', 1)
    assert marker.options == {"until": "mmat viewer on", "timeout": "30"}


@pytest.mark.parametrize("body", ["run with=real-openai", "run exit=two", "run quietly", "walk"])
def test_a_marker_that_cannot_be_read_is_an_error(body: str) -> None:
    with pytest.raises(MarkerError, match="line 4"):
        parse_marker(body, 4)


def test_a_console_block_runs_its_prompted_lines_with_their_continuations() -> None:
    text = "$ mmat build \\\n    --out runs/x\nbuilt 10 samples\n$ mmat plugins\nsample 1.0\n"
    assert console_commands(text) == "mmat build \\\n    --out runs/x\nmmat plugins\n"


def test_the_example_doc_path_is_not_a_real_file() -> None:
    # The parser tests above read texts under this name; it must not shadow a real page.
    assert not Path(DOC).exists()
