"""Prompts are written text: a line break only where the text means one, never inside a sentence.

Every prompt and template is found, not listed: the test reads every string literal in the
source of ``mmat_core`` and ``plugins`` (docstrings aside), so a prompt added anywhere, under any
name, is checked the day it is written. The few literals that are not prose (SQL, a script run in
a subprocess, Markdown, an option list) are named in :data:`NOT_PROSE` with the reason.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmat_core import prompts

ROOT = Path(__file__).resolve().parents[2]
#: The source whose strings can reach a model or the training data.
SCANNED = ("mmat_core", "plugins")

#: A break inside a sentence:
#: * after a comma or semicolon (``"attribute}}],\n\"relationships\""``);
#: * between two words (``"reasoning in steps\nand calling"``);
#: * before a lower-case word, unless after a colon (``"{graph}\nwrite one caption"``).
#: A break after a full stop, a colon, a placeholder or a tag, or before a list item, a
#: placeholder or a format example, is meant.
BREAK_INSIDE_SENTENCE = re.compile(r"[,;]\n|[A-Za-z0-9]\n[A-Za-z0-9]|(?<![:\n])\n[a-z]")

#: Literals that are not prose, as "path:owner" (the enclosing function, class or assigned name),
#: with the reason their line breaks are meant.
NOT_PROSE = {
    "mmat_core/engine/cache.py:_SCHEMA": "SQL",
    "mmat_core/store.py:_SCHEMA": "SQL",
    "plugins/search/local.py:_SCHEMA": "SQL",
    "plugins/viewer/catalog.py:_SCHEMA": "SQL",
    "plugins/trainers/swift.py:_version_beside": "a Python script run in the trainer's interpreter",
    "plugins/formatters/hf_dataset.py:dataset_card": "Markdown: headings and paragraphs of the dataset card",
    "plugins/evaluation/lmms/fixtures.py:Benchmark.write": "YAML front matter of a local benchmark's card",
    "plugins/evaluation/lmms/fixtures.py:realworldqa": "a benchmark question with its options, one per line",
}

#: Module-level names that by their ending hold a prompt or template: each must be a literal
#: the scan reads (not built by a call such as ``textwrap.dedent``), so none escapes the check.
PROMPT_NAME = re.compile(r"[A-Z0-9_]*(PROMPT|SYSTEM|TEMPLATE|REQUEST|INSTRUCTION|REPAIR|TURN)$")


@dataclass(frozen=True)
class Literal:
    """One string literal of the source: where it is and its text (an f-string's fields as ``{}``)."""

    path: str
    line: int
    owner: str
    text: str


def sentence_breaks(text: str) -> list[str]:
    """The text around each line break that falls inside a sentence."""
    return [text[max(0, m.start() - 20):m.end() + 20] for m in BREAK_INSIDE_SENTENCE.finditer(text)]


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _owner_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)][:1]


def literals_of(path: Path) -> Iterator[Literal]:
    """Every string literal in ``path`` but docstrings, with its owner."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = _docstrings(tree)
    rel = path.relative_to(ROOT).as_posix()

    def visit(node: ast.AST, owner: str, in_function: bool) -> Iterator[Literal]:
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield Literal(rel, node.lineno, owner, text)
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield Literal(rel, node.lineno, owner, node.value)
            return
        for child in ast.iter_child_nodes(node):
            # Owners are definitions and module- or class-level names, not a function's locals.
            names = _owner_names(child) if isinstance(child, ast.stmt) and not in_function else []
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from visit(child, ".".join(filter(None, [owner, *names])) if names else owner, inner)

    yield from visit(tree, "", False)


def source_files() -> list[Path]:
    """The Python files of the scanned packages."""
    return sorted(p for root in SCANNED for p in (ROOT / root).rglob("*.py") if "__pycache__" not in p.parts)


@functools.cache
def all_literals() -> tuple[Literal, ...]:
    """Every string literal of the scanned source (read once per test session)."""
    return tuple(literal for path in source_files() for literal in literals_of(path))


def test_the_break_detector_catches_a_hard_wrapped_sentence() -> None:
    assert sentence_breaks("reasoning in steps\nand calling operators") == ["reasoning in steps\nand calling operators"]
    assert sentence_breaks('"attribute"}}],\n"relationships": []') != []
    assert sentence_breaks("as context:\n{graph}\nwrite one concise caption") != []
    assert sentence_breaks("Score the\ndialogue") != []


def test_the_break_detector_leaves_meant_breaks_alone() -> None:
    assert sentence_breaks("The operators are:\n{operators}\nWrite every step in this form:\n<THOUGHT>") == []
    assert sentence_breaks("the correct answer is: {answer}\nA reviewer has found a problem.") == []
    assert sentence_breaks("Question: {question}\nReply with one JSON object.\n- rag: a web search.") == []


def test_no_prompt_or_template_has_a_line_break_inside_a_sentence() -> None:
    found = [f"{lit.path}:{lit.line} ({lit.owner or 'module'}): {crumb!r}"
             for lit in all_literals() if f"{lit.path}:{lit.owner}" not in NOT_PROSE
             for crumb in sentence_breaks(lit.text)]
    assert found == [], (
        "line breaks inside sentences (write the text as one string per meant line; if a literal is not prose, "
        "name it in NOT_PROSE with the reason):\n" + "\n".join(found))


def test_every_exception_names_a_literal_that_still_breaks_lines() -> None:
    """An exception whose literal moved or was fixed is removed, so the list stays the exceptions."""
    broken = {f"{lit.path}:{lit.owner}" for lit in all_literals() if sentence_breaks(lit.text)}
    assert sorted(set(NOT_PROSE) - broken) == [], "remove these from NOT_PROSE: nothing there breaks lines now"


def _is_literal(value: ast.expr | None) -> bool:
    """A string (or a tuple, list or dict of them) written out, or a regular expression (never a prompt)."""
    if isinstance(value, (ast.Constant, ast.JoinedStr, ast.Tuple, ast.List, ast.Dict)):
        return True
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "compile"
            and isinstance(value.func.value, ast.Name) and value.func.value.id == "re")


def test_every_prompt_name_holds_a_literal_the_scan_reads() -> None:
    unreadable = []
    for path in source_files():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = _owner_names(node) if isinstance(node, (ast.Assign, ast.AnnAssign)) else []
            if names and PROMPT_NAME.fullmatch(names[0]) and not _is_literal(getattr(node, "value", None)):
                unreadable.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {names[0]}")
    assert unreadable == [], "a prompt built by a call escapes the text check: write it as a literal"


def test_the_scan_reads_the_prompts_of_every_module_that_sends_one() -> None:
    owners = {f"{lit.path}:{lit.owner}" for lit in all_literals()}
    expected = {
        "mmat_core/prompts.py:GENERATOR_SYSTEM", "mmat_core/prompts.py:RR_SYSTEM", "mmat_core/prompts.py:ORR_SYSTEM",
        "mmat_core/prompts.py:FIRST_TURN", "mmat_core/prompts.py:NO_TOOL", "mmat_core/prompts.py:REPAIR_PROMPT",
        "mmat_core/engine/reflection.py:CORRECTION_SYSTEM", "mmat_core/engine/reflection.py:CORRECTION_REQUEST",
        "mmat_core/engine/reflection.py:RECHECK_THOUGHTS", "plugins/critics/judges.py:GENERAL_PROMPT",
        "plugins/critics/judges.py:MATH_PROMPT", "plugins/critics/judges.py:QUALITY_PROMPT",
        "plugins/tools/caption.py:SCENE_GRAPH_PROMPT", "plugins/tools/caption.py:CAPTION_PROMPT",
        "plugins/llms/common.py:REPAIR_INSTRUCTION",
    }
    assert sorted(expected - owners) == []


def test_rr_system_prompt_breaks_lines_only_between_its_parts() -> None:
    from tests.formats import cases

    lines = prompts.rr_system(cases.TOOLS).split("\n")
    assert lines[0].endswith("The operators available are:")
    assert [line for line in lines if line.startswith("- ")] == [f"- {t.name}: {t.description}" for t in cases.TOOLS]
    assert "Write every step in this form:" in lines and lines[-1].endswith("reply with the answer alone.")
