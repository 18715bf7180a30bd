"""Meta-tests: every hook is documented and tested; the documented Python example runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

from mmat_core.hookspecs import COLLECTION_HOOKS

ROOT = Path(__file__).resolve().parents[2]


def test_every_hook_has_a_section_in_the_hook_reference() -> None:
    text = (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\w+)$", text, flags=re.MULTILINE))
    assert set(COLLECTION_HOOKS) - sections == set(), "document every hook in docs/plugins/hooks.md"


def test_every_hook_has_a_test() -> None:
    tests = (ROOT / "tests" / "core" / "test_hooks.py").read_text(encoding="utf-8")
    tested = set(re.findall(r"^def test_(register_\w+)\(", tests, flags=re.MULTILINE))
    assert set(COLLECTION_HOOKS) - tested == set(), "add a test_<hook> to tests/core/test_hooks.py"


def test_python_api_example_runs(tmp_path: Path) -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "python_api.py"))
    kept = namespace["main"](str(tmp_path / "run"))
    assert kept >= 8
    assert (tmp_path / "run" / "rr.jsonl").exists()
