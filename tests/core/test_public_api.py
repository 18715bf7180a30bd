"""The public API: every name a plugin author needs comes from ``mmat_core`` itself, cheaply."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mmat_core

INIT = Path(mmat_core.__file__)


def test_every_name_in_all_resolves() -> None:
    missing = [name for name in mmat_core.__all__ if getattr(mmat_core, name, None) is None]
    assert missing == []


def test_all_lists_each_public_name_once_and_nothing_without_a_home() -> None:
    assert len(mmat_core.__all__) == len(set(mmat_core.__all__))
    assert set(mmat_core.__all__) == {"hookimpl", *mmat_core._LAZY}


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        mmat_core.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover - the failure case
        raise AssertionError("mmat_core.NoSuchThing resolved")


def test_type_checkers_see_every_public_name_from_its_module() -> None:
    """The TYPE_CHECKING block imports each lazy name from the module the lazy table names."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen == mmat_core._LAZY


def test_importing_mmat_core_loads_neither_pydantic_nor_the_engine() -> None:
    code = "import json, sys, mmat_core; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                           text=True).stdout))
    heavy = {name for name in loaded if name.split(".")[0] in {"pydantic", "torch", "transformers", "datasets",
                                                               "ray", "onnxruntime", "httpx", "openai", "anthropic"}}
    core = {name for name in loaded if name.startswith("mmat_core.")}
    assert heavy == set()
    assert core == {"mmat_core.hookspecs"}


def test_a_name_is_imported_on_first_use_only() -> None:
    code = ("import json, sys, mmat_core; before = 'mmat_core.components' in sys.modules; "
            "mmat_core.Tool; print(json.dumps([before, 'mmat_core.components' in sys.modules, "
            "'mmat_core.pipeline' in sys.modules]))")
    result = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert result == [False, True, False]


def test_the_built_in_plugins_use_the_core_source_and_formatter_helpers() -> None:
    from mmat_plugins.formatters.rr_orr import RRFormatter
    from mmat_plugins.sources.tabmwp import TabMWPSource

    assert issubclass(TabMWPSource, mmat_core.RecordSource)
    assert issubclass(RRFormatter, mmat_core.ViewFormatter)


ROOT = INIT.parent.parent


def test_the_authoring_guide_lists_every_public_name() -> None:
    guide = (ROOT / "docs" / "plugins" / "authoring.md").read_text(encoding="utf-8")
    listing = guide.split("## Public API", 1)[1]
    assert [name for name in mmat_core.__all__ if f"`{name}`" not in listing] == []


def test_the_authoring_guide_and_the_example_plugin_import_only_from_mmat_core() -> None:
    guide = (ROOT / "docs" / "plugins" / "authoring.md").read_text(encoding="utf-8")
    package = ROOT / "examples" / "mmat-plugin-example" / "mmat_plugin_example"
    example = "\n".join(path.read_text(encoding="utf-8") for path in sorted(package.glob("*.py")))
    code = "\n".join(block.split("\n", 1)[1] for block in guide.split("```python")[1:])
    # The example's modules may import each other (its hooks import its components on use).
    lines = [line.strip() for text in (code, example) for line in text.splitlines()
             if line.strip().startswith(("from mmat", "import mmat"))
             and not line.strip().startswith("from mmat_plugin_example")]
    # The one other import a guide may show is the command line itself, to test a plugin's command.
    assert lines and all(line.startswith("from mmat_core import") or line == "from mmat_core.cli import main"
                         for line in lines), lines
