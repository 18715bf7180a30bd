"""The layers of mmat point one way: read from the source with ``ast`` (nothing is imported).

The layers enforced, bottom to top (docs/architecture.md, "Layers"); a unit imports only from its
own layer or the ones below::

    0  models and trace queries  models errors secrets construct text_checks trace_view
                                 trace_queries metrics hookspecs paper_figures model_refs
    1  records, images, plugins  writers images fetch components prompts formatting dialogue
                                 plugins (the plugin manager)
    2  engine                    mmat_core.engine
    3  config and run state      config recipes preflight store yields stats curation resume rundir
    4  run phases and outputs    exporter importer schemas run
    5  pipeline and chat engine  pipeline chat (the programmatic APIs that compose engine, config and run)
    6  applications              cli __main__ viewer runtime evaluation

A *unit* is a sub-package of the core (``mmat_core.engine``, ``mmat_core.cli``, ...), a top-level
module of the core (``mmat_core.config``), the core package itself (``mmat_core``, its
``__init__``) or a plugin family (``mmat_plugins.critics``). A unit in no layer above (a module
added later) is held to the other rules. Every import counts, function-local ones included,
except those under ``if TYPE_CHECKING:``: they never run, so they are left out of the cycle and
layer checks (they are still checked for private names and plugin imports).

The rules:

* the core (``mmat_core``) never imports ``mmat_plugins``;
* no cycle between units, and no unit imports a unit of a higher layer;
* no module imports a private name (``_x``) of another module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Source folders and the import name they are installed as (pyproject.toml's package-dir).
PACKAGES = (("mmat_core", "mmat_core"), ("plugins", "mmat_plugins"))

LAYERS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (name, frozenset(f"mmat_core.{unit}" for unit in units.split()))
    for name, units in (
        ("models and trace queries",
         "models errors secrets construct text_checks trace_view trace_queries metrics hookspecs paper_figures "
         "model_refs"),
        ("records, images, plugins", "writers images fetch components prompts formatting dialogue plugins"),
        ("engine", "engine"),
        ("config and run state", "config recipes preflight store yields stats curation resume rundir"),
        ("run phases and outputs", "exporter importer schemas run"),
        ("pipeline and chat engine", "pipeline chat"),
        ("applications", "cli __main__ viewer runtime evaluation"),
    )
)

#: Known exceptions, each to be removed by the work its comment names; the last test below fails
#: when one no longer occurs, so the lists only shrink.
KNOWN_CYCLES: dict[frozenset[str], str] = {}
KNOWN_PLUGIN_IMPORTS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One imported name: ``from target import name`` (name None for ``import target``)."""

    module: str
    line: int
    target: str
    name: str | None
    type_checking: bool

    def where(self) -> str:
        """``module:line`` for a failure message."""
        return f"{self.module}:{self.line}"


def find_modules(root: Path = ROOT, packages: tuple[tuple[str, str], ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for folder, import_name in packages:
        for path in sorted((root / folder).rglob("*.py")):
            parts = [import_name, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return guarded


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import statement of every module (function-local ones too), relative ones resolved."""
    found: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded = _type_checking_nodes(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [Import(module, node.lineno, alias.name, None, id(node) in guarded) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found += [Import(module, node.lineno, target, alias.name, id(node) in guarded) for alias in node.names]
    return found


def imported_module(item: Import, modules: dict[str, Path]) -> str:
    """The module an import reaches: ``from pkg import sub`` reaches ``pkg.sub`` when that is a module."""
    if item.name and f"{item.target}.{item.name}" in modules:
        return f"{item.target}.{item.name}"
    return item.target


def unit_of(module: str) -> str | None:
    """The unit a module belongs to (None outside mmat's packages)."""
    parts = module.split(".")
    if parts[0] not in ("mmat_core", "mmat_plugins"):
        return None
    return ".".join(parts[:2])


def unit_graph(imports: list[Import], modules: dict[str, Path]) -> dict[tuple[str, str], list[Import]]:
    """(importing unit, imported unit) -> the imports behind that edge; TYPE_CHECKING ones left out."""
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for item in imports:
        if item.type_checking:
            continue
        source, target = unit_of(item.module), unit_of(imported_module(item, modules))
        if source and target and source != target:
            edges[(source, target)].append(item)
    return edges


def cycles(edges: dict[tuple[str, str], list[Import]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one unit (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe_cycle(group: frozenset[str], edges: dict[tuple[str, str], list[Import]]) -> str:
    """Each edge inside the group with the first import behind it."""
    lines = [f"{source} -> {target} ({items[0].where()} imports {imported_name(items[0])})"
             for (source, target), items in sorted(edges.items()) if source in group and target in group]
    return "cycle between " + ", ".join(sorted(group)) + ":\n    " + "\n    ".join(lines)


def imported_name(item: Import) -> str:
    """``target.name`` or ``target`` for a message."""
    return f"{item.target}.{item.name}" if item.name else item.target


def without_known_plugin_imports(imports: list[Import]) -> list[Import]:
    """``imports`` less the known core-to-plugin ones: they are reported (and waived) once, by
    the plugin-import check, not again as the cycles they close through a plugin."""
    return [i for i in imports if (i.module, i.target) not in KNOWN_PLUGIN_IMPORTS]


def plugin_imports(imports: list[Import]) -> list[Import]:
    """Imports of ``mmat_plugins`` by a core module."""
    return [i for i in imports if i.module.split(".")[0] == "mmat_core" and i.target.split(".")[0] == "mmat_plugins"]


def private_imports(imports: list[Import], modules: dict[str, Path]) -> list[Import]:
    """Imports of a private name (``_x``, not dunder) or a private module of another module."""
    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    found = []
    for item in imports:
        if item.target.split(".")[0] not in ("mmat_core", "mmat_plugins"):
            continue
        reached = imported_module(item, modules)
        if reached == item.module:
            continue
        names = reached.split(".") + ([item.name] if item.name and reached == item.target else [])
        if any(private(part) for part in names):
            found.append(item)
    return found


def layer_of(unit: str) -> int | None:
    """The index of the layer that lists ``unit`` (None when none does)."""
    return next((number for number, (_, units) in enumerate(LAYERS) if unit in units), None)


def upward_imports(edges: dict[tuple[str, str], list[Import]]) -> list[str]:
    """One message per edge from a listed unit to a unit of a higher layer."""
    found = []
    for (source, target), items in sorted(edges.items()):
        low, high = layer_of(source), layer_of(target)
        if low is None or high is None or high <= low:
            continue
        if any(frozenset({source, target}) <= group for group in KNOWN_CYCLES):
            continue
        found.append(f"{source} (layer {low}, {LAYERS[low][0]}) imports {target} (layer {high}, {LAYERS[high][0]}) "
                     f"at {items[0].where()}: {imported_name(items[0])}")
    return found


@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, Path], list[Import]]:
    modules = find_modules()
    return modules, find_imports(modules)


def test_the_core_never_imports_a_plugin(tree: tuple[dict[str, Path], list[Import]]) -> None:
    _, imports = tree
    bad = [i for i in plugin_imports(imports) if (i.module, i.target) not in KNOWN_PLUGIN_IMPORTS]
    assert not bad, "the core imports a plugin (resolve it through the plugin manager instead):\n" + "\n".join(
        f"  {i.where()} imports {imported_name(i)}" for i in bad)


def test_no_cycle_between_packages(tree: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imports = tree
    edges = unit_graph(without_known_plugin_imports(imports), modules)
    bad = [group for group in cycles(edges) if group not in KNOWN_CYCLES]
    assert not bad, "\n".join(describe_cycle(group, edges) for group in bad)


def test_a_lower_layer_never_imports_a_higher_one(tree: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imports = tree
    bad = upward_imports(unit_graph(imports, modules))
    assert not bad, "imports that point up the layers (see this file's docstring):\n  " + "\n  ".join(bad)


def test_no_module_imports_a_private_name_of_another(tree: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imports = tree
    bad = private_imports(imports, modules)
    assert not bad, "private names imported across modules (make them public, documented):\n" + "\n".join(
        f"  {i.where()} imports {imported_name(i)}" for i in bad)


def test_every_known_exception_still_occurs(tree: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imports = tree
    groups = cycles(unit_graph(without_known_plugin_imports(imports), modules))
    gone = [f"cycle {sorted(group)}" for group in KNOWN_CYCLES if group not in groups]
    seen = {(i.module, i.target) for i in plugin_imports(imports)}
    gone += [f"{module} -> {target}" for module, target in KNOWN_PLUGIN_IMPORTS if (module, target) not in seen]
    assert not gone, f"fixed, so remove from this test's known exceptions: {gone}"


def test_the_chat_engine_sits_beside_the_pipeline_above_the_run() -> None:
    # ChatEngine composes the engine, config and run.assembly: the run, the engine and config
    # must never import it (it would pull the library facade under the build).
    assert layer_of("mmat_core.chat") == layer_of("mmat_core.pipeline")
    assert all(layer_of(unit) < layer_of("mmat_core.chat")  # type: ignore[operator]
               for unit in ("mmat_core.run", "mmat_core.config", "mmat_core.engine"))


# ---- the checks themselves, on a planted tree ------------------------------------------------


def plant(root: Path, files: dict[str, str]) -> tuple[dict[str, Path], list[Import]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    modules = find_modules(root)
    return modules, find_imports(modules)


def test_the_walker_finds_a_cycle_between_two_core_modules(tmp_path: Path) -> None:
    modules, imports = plant(tmp_path, {
        "mmat_core/__init__.py": "",
        "mmat_core/alpha.py": "from mmat_core.beta import b\n",
        "mmat_core/beta.py": "def b():\n    from mmat_core import alpha\n",
        "plugins/__init__.py": "",
    })
    assert cycles(unit_graph(imports, modules)) == [frozenset({"mmat_core.alpha", "mmat_core.beta"})]


def test_the_walker_leaves_type_checking_imports_out_of_cycles(tmp_path: Path) -> None:
    modules, imports = plant(tmp_path, {
        "mmat_core/__init__.py": "",
        "mmat_core/alpha.py": "from mmat_core.beta import b\n",
        "mmat_core/beta.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmat_core.alpha import A\n",
        "plugins/__init__.py": "",
    })
    assert cycles(unit_graph(imports, modules)) == []
    assert [i.type_checking for i in imports if i.module == "mmat_core.beta" and i.target == "mmat_core.alpha"] == [True]


def test_the_walker_finds_a_plugin_import_and_a_relative_private_import(tmp_path: Path) -> None:
    modules, imports = plant(tmp_path, {
        "mmat_core/__init__.py": "",
        "mmat_core/engine/__init__.py": "",
        "mmat_core/engine/tools.py": "from .scheduler import _with_timeout\n",
        "mmat_core/engine/scheduler.py": "def _with_timeout(): ...\n",
        "mmat_core/cli.py": "def f():\n    from mmat_plugins.search.local import build_index\n",
        "plugins/__init__.py": "",
        "plugins/search/__init__.py": "",
        "plugins/search/local.py": "",
    })
    assert [(i.module, imported_name(i)) for i in plugin_imports(imports)] == [
        ("mmat_core.cli", "mmat_plugins.search.local.build_index")]
    assert [(i.where(), imported_name(i)) for i in private_imports(imports, modules)] == [
        ("mmat_core.engine.tools:1", "mmat_core.engine.scheduler._with_timeout")]


def test_the_walker_reports_an_import_up_the_layers(tmp_path: Path) -> None:
    modules, imports = plant(tmp_path, {
        "mmat_core/__init__.py": "",
        "mmat_core/store.py": "from mmat_core.engine.reflection import reflected_by\n",
        "mmat_core/engine/__init__.py": "",
        "mmat_core/engine/reflection.py": "def reflected_by(): ...\n",
        "mmat_core/models.py": "",
        "plugins/__init__.py": "",
    })
    assert upward_imports(unit_graph(imports, modules)) == []  # store (layer 3) may use the engine (layer 2)
    modules, imports = plant(tmp_path, {"mmat_core/models.py": "from mmat_core.store import x\n"})
    bad = upward_imports(unit_graph(imports, modules))
    assert len(bad) == 1 and bad[0].startswith("mmat_core.models (layer 0, models and trace queries) imports mmat_core.store")
