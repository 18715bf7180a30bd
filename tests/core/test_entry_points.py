"""mmat reads the ``mmat`` entry points from the distribution folders on ``sys.path`` itself (no
``importlib.metadata`` import on start-up) and must find exactly what ``importlib.metadata``
finds; anything it cannot read goes to ``importlib.metadata``."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from mmat_core.plugins import PluginEntryPoint, PluginManager, metadata_entry_points, scan_entry_points


def rows(found: list[tuple[PluginEntryPoint, str, str]] | None) -> list[tuple[str, str, str, str]]:
    assert found is not None
    return sorted((ep.name, ep.value, distribution, version) for ep, distribution, version in found)


def distribution(site: Path, folder: str, entry_points: str, metadata: str, metadata_file: str = "METADATA") -> None:
    info = site / folder
    info.mkdir(parents=True)
    (info / metadata_file).write_text(metadata)
    (info / "entry_points.txt").write_text(entry_points)


@pytest.mark.parametrize("group", ["mmat", "console_scripts", "pytest11"])
def test_the_scan_finds_what_importlib_metadata_finds_in_this_environment(group: str) -> None:
    assert rows(scan_entry_points(group)) == rows(metadata_entry_points(group))


def test_the_scan_reads_comments_attributes_extras_eggs_and_the_first_of_a_name(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    distribution(first, "Lens_Tools-2.0.dist-info",
                 "# made by hand\n[console_scripts]\nlens = lens.cli:main\n\n[mmat]\n# a comment\nlens = lens.plugin:hooks.Registry [gpu]\n",
                 "Metadata-Version: 2.1\nName: lens-tools\nVersion: 2.0\n\nName: not a header\n")
    distribution(first, "old_style-0.3.egg-info", "[mmat]\nold = old_style\n",
                 "Metadata-Version: 1.1\nName: old-style\nVersion: 0.3\n", metadata_file="PKG-INFO")
    distribution(second, "lens.tools-1.0.dist-info", "[mmat]\nshadowed = lens.old\n",
                 "Metadata-Version: 2.1\nName: lens.tools\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    monkeypatch.syspath_prepend(str(tmp_path / "missing"))  # a folder that does not exist holds nothing
    found = rows(scan_entry_points("mmat"))
    assert found == rows(metadata_entry_points("mmat"))
    assert ("lens", "lens.plugin:hooks.Registry [gpu]", "lens-tools", "2.0") in found
    assert ("old", "old_style", "old-style", "0.3") in found
    assert "shadowed" not in {name for name, *_ in found}


def test_a_zip_on_the_path_is_left_to_importlib_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped_plugin-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped-plugin\nVersion: 1.0\n")
        zipped.writestr("zipped_plugin-1.0.dist-info/entry_points.txt", "[mmat]\nzipped = zipped_plugin\n")
    monkeypatch.syspath_prepend(str(archive))
    assert scan_entry_points("mmat") is None
    names = {ep.name for ep, _distribution, _version in PluginManager().entry_points()}
    assert {"zipped", "sources"} <= names


def test_an_entry_point_loads_the_attribute_it_names() -> None:
    assert PluginEntryPoint("x", "mmat_core.plugins:PluginManager.load").load() is PluginManager.load
    assert PluginEntryPoint("x", "mmat_core.plugins").load() is sys.modules["mmat_core.plugins"]


def test_an_entry_point_that_names_no_module_cannot_load() -> None:
    with pytest.raises(ValueError, match="not an entry point: 'no module here'"):
        PluginEntryPoint("x", "no module here").load()
