"""The plugin manager: discovery, isolation of broken plugins, allow/block lists, registries."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from mmat_core import hookimpl
from mmat_core.components import Critic, Tool
from mmat_core.errors import DuplicateComponentError, PluginError, UnknownComponentError
from mmat_core.plugins import PluginManager, PluginWarning
from tests.core.conftest import EchoTool

BUILTIN_PLUGINS = {"sources", "llms", "tools", "search", "critics", "formatters", "trainers", "executors"}


def fake_distribution(site: Path, name: str, module_source: str, entry: str | None = None) -> None:
    """Write a real installed distribution (dist-info + module) into ``site``."""
    dist = site / f"{name}-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(f"[mmat]\n{name} = {entry or name.replace('-', '_')}\n")
    (site / f"{name.replace('-', '_')}.py").write_text(textwrap.dedent(module_source))


def test_builtins_are_loaded_through_the_entry_point_group() -> None:
    infos = {info.name: info for info in PluginManager().info()}
    assert BUILTIN_PLUGINS <= set(infos)
    assert all(infos[name].distribution == "mmat" for name in BUILTIN_PLUGINS)
    assert "offline" in infos["llms"].components["llm"]


def test_components_are_stamped_with_their_plugin() -> None:
    pm = PluginManager()
    assert pm.get("formatter", "rr").plugin == "formatters"


def test_loading_is_lazy_and_happens_once() -> None:
    pm = PluginManager()
    assert pm.plugins == {}
    pm.load()
    first = dict(pm.plugins)
    pm.load()
    assert pm.plugins == first


def test_plugin_that_fails_to_import_warns_with_name_version_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path, "broken-plugin", "raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match=r"'broken-plugin' \(broken-plugin 1.2.3\).*boom at import"):
        pm = PluginManager().load()
    assert pm.plugins["broken-plugin"].error
    assert "offline" in pm.registry("llm")  # the rest still works


def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path, "broken-plugin", "raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MMAT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken-plugin.*MMAT_STRICT_PLUGINS=1"):
        PluginManager().load()


def test_plugin_failing_halfway_through_registration_leaves_nothing_registered() -> None:
    class Half:
        @staticmethod
        @hookimpl
        def register_tools(register: Callable) -> None:
            register(EchoTool)
            raise ValueError("second tool is broken")

    pm = PluginManager()
    pm.register(Half, "half")
    with pytest.warns(PluginWarning, match="half.*second tool is broken"):
        pm.load()
    assert "echo" not in pm.registry("tool")
    assert "half" not in [p for p in pm.pm.list_name_plugin() if p[0] == "half"]


def test_registering_a_class_of_the_wrong_family_is_refused() -> None:
    class Wrong:
        @staticmethod
        @hookimpl
        def register_critics(register: Callable) -> None:
            register(EchoTool)  # a Tool, not a Critic

    pm = PluginManager()
    pm.register(Wrong, "wrong")
    with pytest.warns(PluginWarning, match="not a subclass of mmat_core.components.Critic"):
        pm.load()
    assert "echo" not in pm.registry("critic")


def test_two_plugins_registering_one_name_is_an_error_naming_both() -> None:
    class Other(Tool):
        name = "ocr"

        async def run(self, args, ctx):  # pragma: no cover - never run
            raise AssertionError

    class Clash:
        @staticmethod
        @hookimpl
        def register_tools(register: Callable) -> None:
            register(Other)

    pm = PluginManager()
    pm.register(Clash, "clash")
    with pytest.raises(DuplicateComponentError, match=r"tool 'ocr' is registered by two plugins: 'tools'.*'clash'"):
        pm.load()


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(UnknownComponentError) as excinfo:
        PluginManager().get("tool", "ocrr")
    message = str(excinfo.value)
    assert "Unknown tool 'ocrr'. Did you mean 'ocr'?" in message
    assert "Available: face_detection, image_caption" in message


def test_block_list_drops_a_builtin_before_import() -> None:
    pm = PluginManager(block=["critics"])
    assert "critics" not in {info.name for info in pm.info()}
    assert pm.registry("critic").names() == [] or "answer_match" not in pm.registry("critic")


def test_block_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAT_DISABLE_PLUGINS", "critics, trainers")
    names = {info.name for info in PluginManager().info()}
    assert not {"critics", "trainers"} & names


def test_allow_list_keeps_only_the_named_plugins() -> None:
    names = {info.name for info in PluginManager(allow=["llms", "formatters"]).info()}
    assert names <= {"llms", "formatters"} and names


def test_allow_list_builtins_keyword_allows_every_builtin() -> None:
    names = {info.name for info in PluginManager(allow=["builtins"]).info()}
    assert BUILTIN_PLUGINS <= names


def test_plugins_registered_in_code_are_listed_with_their_components() -> None:
    class Extra:
        @staticmethod
        @hookimpl
        def register_tools(register: Callable) -> None:
            register(EchoTool)

    pm = PluginManager()
    pm.register(Extra, "extra", version="9.9")
    info = {i.name: i for i in pm.info()}["extra"]
    assert info.components == {"tool": ["echo"]} and info.hooks == ["register_tools"]
    assert pm.get("tool", "echo") is EchoTool


def test_every_collection_hook_is_called_with_keyword_arguments_only() -> None:
    seen: dict[str, object] = {}

    class Spy:
        @staticmethod
        @hookimpl
        def register_critics(register: Callable) -> None:
            seen["register"] = register

    pm = PluginManager(entry_points=False)
    pm.register(Spy, "spy")
    pm.load()
    assert callable(seen["register"])
    assert issubclass(Critic, object)


def test_an_unknown_name_in_the_allow_list_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'llmz' in the allow list.*Did you mean 'llms'\?.*Available: .*critics"):
        PluginManager(allow=["llmz"]).load()


def test_an_unknown_name_in_the_block_list_is_an_error_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAT_DISABLE_PLUGINS", "critcs")
    with pytest.raises(PluginError, match=r"unknown plugin 'critcs' in the block list.*Did you mean 'critics'\?"):
        PluginManager().load()


def test_the_allow_list_may_name_a_plugin_registered_in_code() -> None:
    pm = PluginManager(allow=["llms", "mine"])
    pm.register(object(), "mine")
    assert "mine" in {info.name for info in pm.info()}


class Misspelt:
    """A plugin with one real hook and one misspelt one (``register_tool``)."""

    @staticmethod
    @hookimpl
    def register_tool(register: Callable) -> None:  # pragma: no cover - never called: that is the defect
        register(EchoTool)

    @staticmethod
    @hookimpl
    def register_critics(register: Callable) -> None:
        pass


def test_a_misspelt_hook_in_code_warns_naming_plugin_hook_and_the_closest_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMAT_STRICT_PLUGINS", raising=False)
    pm = PluginManager(entry_points=False)
    pm.register(Misspelt, "misspelt")
    with pytest.warns(PluginWarning, match=r"plugin 'misspelt'.*'register_tool' is not an mmat hook\. "
                                           r"Did you mean 'register_tools'\?"):
        pm.load()
    assert pm.plugins["misspelt"].hooks == ["register_critics"]  # its real hook still counts


def test_a_misspelt_hook_is_an_error_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAT_STRICT_PLUGINS", "1")
    pm = PluginManager(entry_points=False)
    pm.register(Misspelt, "misspelt")
    with pytest.raises(PluginError, match=r"'misspelt'.*'register_tool'.*'register_tools'.*MMAT_STRICT_PLUGINS=1"):
        pm.load()
    assert "misspelt" not in dict(pm.pm.list_name_plugin())  # nothing of it stays registered


def test_a_misspelt_hook_in_an_installed_distribution_warns_with_its_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path, "typo-plugin", """
        from mmat_core import hookimpl

        @hookimpl
        def register_formatter(register):
            pass
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MMAT_STRICT_PLUGINS", raising=False)
    with pytest.warns(PluginWarning, match=r"'typo-plugin' \(typo-plugin 1\.2\.3\).*'register_formatter'.*"
                                           r"Did you mean 'register_formatters'\?"):
        PluginManager().load()


def test_an_optional_hook_of_another_version_is_not_reported() -> None:
    class Newer:
        @staticmethod
        @hookimpl(optionalhook=True)
        def register_widgets(register: Callable) -> None:  # pragma: no cover - a hook this mmat lacks
            pass

    pm = PluginManager(entry_points=False)
    pm.register(Newer, "newer")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        pm.load()
    assert "newer" in pm.plugins


DETECTOR_PLUGIN = """
    from mmat_core import Detection, Detector, hookimpl

    class Corner(Detector):
        name = "corner"

        async def detect(self, image, size, labels, ctx):
            return [Detection(label=label, score=1.0, box=[0, 0, 1, 1]) for label in labels]

    @hookimpl
    def register_detectors(register):
        register(Corner)
"""


def test_a_detector_comes_from_an_installed_plugin_and_obeys_the_block_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path, "corner-detector", DETECTOR_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert PluginManager().get("detector", "corner").plugin == "corner-detector"
    blocked = PluginManager(block=["corner-detector"])
    with pytest.raises(UnknownComponentError, match="Unknown detector 'corner'.*Available: http, transformers"):
        blocked.get("detector", "corner")
