"""Start-up stays cheap: listing commands imports the plugins' hook modules and command modules,
never pydantic, the component bases or the components themselves (bench/startup.py measures the
time; these tests check the imports, which do not depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mmat_core import hookimpl
from mmat_core.models import DEFER_BUILD, PYDANTIC_VERSION
from mmat_core.plugins import PluginManager

ROOT = Path(__file__).resolve().parents[2]

#: Runs the real ``mmat`` entry with the given arguments, then prints the imported module names as
#: JSON after a marker line (the command's own output comes before it).
WRAPPER = """
import json, sys
sys.argv = ["mmat", *json.loads(sys.argv[1])]
from mmat_core.cli import run
try:
    run()
except SystemExit:
    pass
print("--modules--")
print(json.dumps(sorted(sys.modules)))
"""

#: Heavy for start-up: pydantic, the component bases and the records they import.
HEAVY = ("pydantic", "mmat_core.components", "mmat_core.models", "asyncio")


def run_mmat(*args: str) -> tuple[str, list[str]]:
    """The output of ``mmat ARGS`` in a fresh interpreter and the modules it imported. Third-party
    plugins installed beside mmat are left out (``--plugins builtins``): what they import is theirs."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps([*args, "--plugins", "builtins"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    output, _, modules = done.stdout.rpartition("--modules--\n")
    return output, json.loads(modules)


def heavy_modules(modules: list[str]) -> list[str]:
    """The modules of ``HEAVY`` (or inside them) among ``modules``."""
    return [name for name in modules if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)]


def test_help_lists_the_commands_of_the_built_in_plugins() -> None:
    output, _modules = run_mmat("--help")
    for command in ("view", "infer", "eval", "rag", "build", "plugins"):
        assert f"\n  {command} " in output, output


def test_help_imports_no_pydantic_and_no_component() -> None:
    _output, modules = run_mmat("--help")
    assert heavy_modules(modules) == []


def test_help_imports_no_component_module_of_a_built_in_plugin() -> None:
    _output, modules = run_mmat("--help")
    # Only the hook modules (mmat_plugins.NAME) and the command modules may be imported.
    loaded = [name for name in modules if name.startswith("mmat_plugins.") and name.count(".") > 1]
    assert loaded == ["mmat_plugins.agent.command", "mmat_plugins.evaluation.command",
                      "mmat_plugins.search.command", "mmat_plugins.trainers.command", "mmat_plugins.viewer.command"]


def test_a_core_commands_help_imports_no_pydantic_and_no_plugin() -> None:
    _output, modules = run_mmat("validate", "--help")
    assert heavy_modules(modules) == []
    assert [name for name in modules if name.startswith("mmat_plugins")] == []


def test_the_recipes_listing_imports_no_pydantic_and_no_plugin() -> None:
    output, modules = run_mmat("recipes")
    assert output.startswith("paper ")
    assert heavy_modules(modules) == []
    assert [name for name in modules if name.startswith("mmat_plugins")] == []


#: Runs ``mmat ARGS`` (built-in plugins only), then prints the names of the core's pydantic models
#: (records, the model-call and tool records) and of every component's options whose validator was
#: built, after a marker line.
BUILT_MODELS = """
import json, sys
sys.argv = ["mmat", *json.loads(sys.argv[1]), "--plugins", "builtins"]
from mmat_core.cli import run
try:
    run()
except SystemExit:
    pass
from pydantic import BaseModel
from mmat_core.components import ComponentOptions

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

print("--built--")
print(json.dumps(sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in set(subclasses(BaseModel))
                        if (cls.__module__.startswith("mmat_core.") or issubclass(cls, ComponentOptions))
                        and cls.__pydantic_complete__)))
"""


def built_models(*args: str) -> list[str]:
    """The names of the core's pydantic models and the components' options whose validator
    ``mmat ARGS`` built."""
    done = subprocess.run([sys.executable, "-c", BUILT_MODELS, json.dumps(list(args))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    _output, _, built = done.stdout.rpartition("--built--\n")
    return json.loads(built)


@pytest.mark.skipif(not DEFER_BUILD, reason=f"pydantic {PYDANTIC_VERSION} builds every model when it is defined")
def test_the_plugins_listing_builds_no_core_model_and_no_component_options() -> None:
    # Listing names components; validating their options or any record is for a build.
    assert built_models("plugins") == []


@pytest.mark.skipif(not DEFER_BUILD, reason=f"pydantic {PYDANTIC_VERSION} builds every model when it is defined")
@pytest.mark.parametrize("listing", ["sources", "tools"])
def test_the_sources_and_tools_listings_build_no_model(listing: str) -> None:
    # They show each component's options, read from the fields, not from a schema.
    assert built_models(listing) == []


@pytest.mark.skipif(not DEFER_BUILD, reason=f"pydantic {PYDANTIC_VERSION} builds every model when it is defined")
def test_the_json_tools_listing_builds_the_options_of_tools_only() -> None:
    # `mmat tools --json` prints each tool's options schema: only those are built.
    built = built_models("tools", "--json")
    assert "mmat_plugins.tools.ocr.OCROptions" in built
    assert [name for name in built if not name.startswith("mmat_plugins.tools.")] == []


def test_the_plugins_listing_imports_neither_asyncio_nor_an_http_client() -> None:
    # Components import the event loop and HTTP clients inside the methods that call a model or
    # a server; a listing only reads their names (asyncio and http.client with ssl are a tenth of it).
    _output, modules = run_mmat("plugins")
    assert [name for name in ("asyncio", "ssl", "http.client", "urllib.request") if name in modules] == []


def test_the_plugins_listing_imports_the_components() -> None:
    # The listing names every component, so it must run every collection hook.
    output, modules = run_mmat("plugins")
    assert "source: cauldron" in output
    assert "mmat_core.components" in modules


class Counting:
    """A plugin in code with a command and a tool hook that counts its calls."""

    calls = 0

    @staticmethod
    @hookimpl
    def register_tools(register: object) -> None:
        Counting.calls += 1

    @staticmethod
    @hookimpl
    def register_commands(cli: click.Group) -> None:
        cli.add_command(click.Command("counted"))


def test_load_hooks_registers_the_plugins_without_running_their_collection_hooks() -> None:
    Counting.calls = 0
    manager = PluginManager(entry_points=False)
    manager.register(Counting, "counting")
    manager.load_hooks()
    assert Counting.calls == 0
    assert manager.plugins["counting"].hooks == ["register_tools", "register_commands"]
    assert [impl.plugin_name for impl in manager.pm.hook.register_commands.get_hookimpls()] == ["counting"]


def test_load_after_load_hooks_runs_each_collection_hook_once() -> None:
    Counting.calls = 0
    manager = PluginManager(entry_points=False)
    manager.register(Counting, "counting")
    manager.load_hooks()
    manager.load()
    manager.load()
    assert Counting.calls == 1
